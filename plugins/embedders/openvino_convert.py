"""Converting an embedding model to OpenVINO IR, once per model and INT8 mode.

The torch encoder (pooling and normalisation included, see :mod:`.pooling`) is traced to
an FP32 IR with dynamic batch and sequence axes; the INT8 variants start from that IR.
INT8 comes in two modes: ``"weights"`` compresses the weights with
``nncf.compress_weights`` and keeps activations float; ``"full"`` is post-training static
quantisation with ``nncf.quantize`` (weights and activations INT8), calibrated on texts
(see :mod:`.calibration`). Every result is kept in the IR cache (:mod:`.ir_cache`), keyed
by the model's content digest and the conversion options.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from hwkit.errors import UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders import calibration, ir_cache
from hwkit.plugins.embedders.batching import length_sorted_batches, pad_batch, tokenize
from hwkit.plugins.embedders.model_config import Pooling
from hwkit.plugins.nncf_tools import compress_int8_weights, import_nncf, quiet_nncf

log = get_logger(__name__)

OUTPUT_NAME = "sentence_embedding"

Int8Mode = Literal["weights", "full"]
INT8_MODES: tuple[Int8Mode, ...] = ("weights", "full")
# What nncf.quantize is asked for in "full" mode; part of the IR cache key, so changing it
# re-quantises. Measured on all-MiniLM-L6-v2 / SciFact (cosine to FP32 on 200 abstracts,
# min/mean; table in docs/embedders.md):
# - MIXED preset (symmetric weights, asymmetric activations): NNCF's transformer default.
# - SmoothQuant at NNCF's default MatMul alpha 0.95 (0.9895/0.9947); off: 0.9893/0.9936,
#   alpha 0.5: 0.9345/0.9618. Fast bias correction beat the slow one (0.9872/0.9916).
# - ScaledDotProductAttention inputs stay float: same accuracy, and quantising Q/K splits the
#   CPU plugin's fused attention kernel into MatMul/Softmax nodes (1.0 s vs 0.6 s per 32x256
#   batch), while every Linear layer (where the FLOPs are) still runs INT8.
# SciFact nDCG@10: 0.6460 full INT8 (corpus-calibrated) vs 0.6451 FP32.
FULL_INT8_RECIPE: dict[str, Any] = {
    "preset": "mixed",
    "smooth_quant_matmul_alpha": 0.95,
    "fast_bias_correction": True,
    "ignored_types": ["ScaledDotProductAttention"],
}


def int8_mode(int8: bool | str | None) -> Int8Mode | None:
    """``int8=`` normalised: None (FP32), ``"weights"`` (also ``True``) or ``"full"``.

    ``True`` keeps meaning weight-only compression, as before ``"full"`` existed: existing
    callers keep their numerics (cosine >= 0.999 to FP32) and need no calibration texts.
    Full INT8 is asked for by name.
    """
    if int8 is None or int8 is False:
        return None
    if int8 is True:
        return "weights"
    if isinstance(int8, str) and int8.lower() in INT8_MODES:
        return "weights" if int8.lower() == "weights" else "full"
    raise UsageError(
        f"int8 must be False, True, 'weights' or 'full', got {int8!r}",
        hint="'weights': INT8 weights, float activations; 'full': weights and activations INT8",
    )


class IRConverter:
    """Finds or builds the cached IR of one model for each INT8 mode.

    ``calibration_texts`` (full INT8 only) are the texts as the embedder prepares them
    (prompt prefixed, lower-cased where the model asks), so calibration sees what
    embedding will; they are hashed into the cache key.
    """

    # How many IR conversions this process made (tests check that a cache hit converts nothing).
    conversions: ClassVar[int] = 0

    def __init__(
        self,
        model_path: Path,
        *,
        pooling: Pooling,
        tokenizer: Any,
        max_length: int,
        dim: int,
        cache_root: Path,
        calibration_texts: Sequence[str] = (),
    ) -> None:
        self.model_path = model_path
        self.pooling: Pooling = pooling
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = dim
        self.cache_root = cache_root
        self.calibration_texts = list(calibration_texts)

    def key(self, mode: Int8Mode | None) -> str:
        """The IR cache key. FP32 and weight-only keep the option form they had before full
        INT8 existed (``"int8": False/True``); full INT8 adds the calibration digest and the
        quantisation recipe."""
        options: dict[str, Any] = {
            "pooling": self.pooling,
            "int8": {None: False, "weights": True, "full": "full"}[mode],
            "normalize": True,
        }
        if mode == "full":
            options["calibration"] = calibration.digest(self.calibration_texts, self.max_length)
            options["recipe"] = FULL_INT8_RECIPE
        return ir_cache.cache_key(self.model_path, options)

    def entry(self, mode: Int8Mode | None) -> tuple[Path, bool]:
        """The cache entry for ``mode`` and whether it was converted now (False: a hit)."""
        key = self.key(mode)
        found = ir_cache.lookup(self.cache_root, key)
        if found is not None:
            return found, False
        return ir_cache.store(self.cache_root, key, lambda out: self._convert(out, mode)), True

    def _fp32_xml(self) -> Path:
        """The FP32 IR (converted now if absent): the INT8 variants start from it."""
        entry, _ = self.entry(None)
        return entry / ir_cache.XML

    def _convert(self, out_dir: Path, mode: Int8Mode | None) -> dict[str, Any]:
        """Write the IR: trace the torch encoder (FP32), compress the FP32 IR's weights
        (``"weights"``), or quantise it with calibration statistics (``"full"``)."""
        import openvino as ov

        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if mode == "weights":
            model = compress_int8_weights(ov.Core().read_model(str(self._fp32_xml())))
        elif mode == "full":
            model = ov.Core().read_model(str(self._fp32_xml()))
            model = quantize_int8(model, self.calibration_items(model))
            extra["calibration"] = {
                "texts": len(self.calibration_texts),
                "digest": calibration.digest(self.calibration_texts, self.max_length),
                "recipe": FULL_INT8_RECIPE,
            }
        else:
            model = self._trace()
        ov.save_model(model, str(out_dir / ir_cache.XML), compress_to_fp16=False)
        type(self).conversions += 1
        seconds = time.perf_counter() - started
        log.info(
            "converted model to OpenVINO IR",
            model=str(self.model_path),
            int8=mode,
            seconds=round(seconds, 2),
            cache=str(self.cache_root),
        )
        return {
            "model_path": str(self.model_path),
            "pooling": self.pooling,
            "int8": mode is not None,
            "int8_mode": mode,
            **extra,
            "inputs": [port.get_any_name() for port in model.inputs],
            "dim": self.dim,
            "openvino": ov.__version__,
            "convert_seconds": round(seconds, 3),
            "created": time.time(),
        }

    def calibration_items(self, model: Any) -> list[dict[str, np.ndarray]]:
        """One model input per calibration text, built like embed() builds a batch.

        Same prefixing (done by the embedder), truncation to ``max_length``, ``pad_batch``
        arrays (int64 ids, attention mask, token type ids) and input names as embed(). Each
        text is its own batch, unpadded: the cached IR is shape-agnostic (an NPU's static
        reshape happens after loading, and the IR is shared by static and dynamic
        embedders), and padding positions are masked out of attention and pooling, so their
        activations should not widen the quantisation ranges of the real tokens'.
        """
        names = [port.get_any_name() for port in model.inputs]
        enc = tokenize(self.tokenizer, self.calibration_texts, self.max_length)
        items = []
        for index in length_sorted_batches(enc.lengths, 1):
            arrays = pad_batch(self.tokenizer, enc, index)
            items.append({name: arrays[name] for name in names})
        return items

    def _trace(self) -> Any:
        """Trace the torch encoder (pooling included) with dynamic batch and sequence axes."""
        import openvino as ov
        import torch

        from hwkit.plugins.embedders.pooling import load_encoder

        encoder = load_encoder(self.model_path, self.pooling)
        sample = tokenize(
            self.tokenizer, ["an example sentence", "a second, longer example sentence"], 16
        )
        arrays = pad_batch(self.tokenizer, sample, np.arange(len(sample)))
        order = ["input_ids", "attention_mask", "token_type_ids"]
        example = {k: torch.from_numpy(arrays[k]) for k in order if k in arrays}
        spec = [(k, ov.PartialShape([-1, -1]), ov.Type.i64) for k in example]
        with torch.inference_mode(), warnings.catch_warnings():
            # Tracing warns about Python branches on shapes; the dynamic axes are declared.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            model = ov.convert_model(encoder, example_input=example, input=spec)
        model.outputs[0].get_tensor().set_names({OUTPUT_NAME})
        return model


def quantize_int8(model: Any, items: list[dict[str, np.ndarray]]) -> Any:
    """Post-training static quantisation (weights and activations INT8) of an FP32 IR.

    ``ModelType.TRANSFORMER`` adds NNCF's transformer patterns (no quantiser inside
    LayerNorm/GELU/Softmax, symmetric activations into MatMuls) and SmoothQuant; every
    calibration item is used (``subset_size``). See FULL_INT8_RECIPE for the choices.
    """
    nncf = import_nncf()
    recipe = FULL_INT8_RECIPE
    with quiet_nncf():
        return nncf.quantize(
            model,
            nncf.Dataset(items),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset(recipe["preset"]),
            subset_size=len(items),
            fast_bias_correction=recipe["fast_bias_correction"],
            # validate=False: a model traced without SDPA (eager attention) has none to skip.
            ignored_scope=nncf.IgnoredScope(types=list(recipe["ignored_types"]), validate=False),
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(
                    matmul=recipe["smooth_quant_matmul_alpha"]
                )
            ),
        )
