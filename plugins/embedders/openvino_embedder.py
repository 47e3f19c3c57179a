"""The OpenVINO embedder: the torch encoder converted once to IR, compiled for CPU, GPU or NPU.

Pooling and normalisation are part of the converted graph, so the compiled model returns
sentence vectors. Corpora run under the THROUGHPUT hint through a queue of async infer requests;
queries under the LATENCY hint. An NPU compiles static shapes only: the model is reshaped
to ``(batch_size, max_length)`` and every batch is padded to it.

INT8 comes in two modes (``int8=``): ``"weights"`` (also ``True``) compresses the weights
with ``nncf.compress_weights`` and keeps activations float; ``"full"`` is post-training
static quantisation with ``nncf.quantize`` (weights and activations INT8), calibrated on
texts (see :mod:`hwkit.plugins.embedders.calibration`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hwkit.embedder import Embedder, TextKind
from hwkit.errors import UnavailableError, UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders import calibration, ir_cache
from hwkit.plugins.embedders.batching import (
    Encoded,
    length_sorted_batches,
    pad_batch,
    progress,
    report_truncation,
    tokenize,
)
from hwkit.plugins.embedders.model_config import read_model_config, resolve_model_path
from hwkit.plugins.embedders.torch_embedder import PrefixMixin, effective_max_length
from hwkit.plugins.nncf_tools import compress_int8_weights, import_nncf, quiet_nncf

if TYPE_CHECKING:
    from hwkit.device import Device

log = get_logger(__name__)

OUTPUT_NAME = "sentence_embedding"
# hwkit device kind -> OpenVINO device name
OV_DEVICE_NAMES = {"cpu": "CPU", "xpu": "GPU", "gpu": "GPU", "npu": "NPU"}
STATIC_ONLY = ("NPU",)

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


def openvino_device_name(device: Device | str | None) -> str:
    """``"CPU"``, ``"GPU.1"``, ``"NPU"`` from a hwkit Device or an OpenVINO device string."""
    if device is None:
        return "CPU"
    if isinstance(device, str):
        base, _, index = device.partition(".")
        name = OV_DEVICE_NAMES.get(base.lower(), base.upper())
        return f"{name}.{index}" if index else name
    kind = OV_DEVICE_NAMES.get(device.kind)
    if kind is None:
        raise UsageError(
            f"OpenVINO cannot run on {device.id} ({device.kind})",
            hint="use the torch embedder for this device, or device='CPU'|'GPU'|'NPU'",
        )
    return f"{kind}.{device.index}" if kind == "GPU" and device.index else kind


def int8_mode(int8: bool | str | None) -> Int8Mode | None:
    """``int8=`` normalised: None (FP32), ``"weights"`` (also ``True``) or ``"full"``.

    ``True`` keeps meaning weight-only compression, as before ``"full"`` existed: existing
    callers keep their numerics (cosine >= 0.999 to FP32) and their cached IRs, and need no
    calibration texts. Full INT8 is asked for by name.
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


class OpenVINOEmbedder(PrefixMixin, Embedder):
    """Embeds with an OpenVINO-compiled copy of the model (FP32, INT8 weights, or full INT8)."""

    name = "openvino"
    # How many IR conversions this process made (tests check that a cache hit converts nothing).
    conversions = 0

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: Device | str | None = "CPU",
        int8: bool | Int8Mode = False,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        *,
        static_shape: bool | None = None,
        num_threads: int | None = None,
        inference_precision: str | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        show_progress: bool | None = None,
        calibration_texts: Sequence[str] | None = None,
    ) -> None:
        """``int8``: False (FP32), True or ``"weights"`` (INT8 weights, float activations), or
        ``"full"`` (weights and activations INT8, calibrated on ``calibration_texts``: a
        sample of the corpus to embed, at most 300 are used; None means hwkit's bundled
        English texts). Calibration texts are ignored unless ``int8="full"``.
        """
        import openvino as ov
        from transformers import AutoConfig, AutoTokenizer

        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path: Path = resolve_model_path(model)
        self.config = read_model_config(self.model_path)
        self.device_name = openvino_device_name(device)
        self.core = ov.Core()
        available = self.core.available_devices
        if not any(d == self.device_name or d.split(".")[0] == self.device_name for d in available):
            raise UnavailableError(
                f"OpenVINO device {self.device_name} is not available",
                hint=f"OpenVINO sees {', '.join(available) or 'no device'}",
            )
        self.int8: Int8Mode | None = int8_mode(int8)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.num_threads = num_threads
        self.inference_precision = inference_precision
        base_device = self.device_name.split(".")[0]
        self.static_shape = base_device in STATIC_ONLY if static_shape is None else static_shape
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        hf_config = AutoConfig.from_pretrained(str(self.model_path), local_files_only=True)
        self.max_length = effective_max_length(self.config, self.tokenizer, hf_config, max_length)
        self.dim = int(hf_config.hidden_size)
        self._init_prefixes(query_prefix, document_prefix)
        # Full INT8 only: the texts as embed() prepares them (prefix, lower case), hashed
        # into the cache key so another calibration set makes another IR.
        self.calibration_texts: list[str] = []
        if self.int8 == "full":
            texts = (
                calibration.bundled_texts()
                if calibration_texts is None
                else calibration.check_texts(calibration_texts)
            )
            self.calibration_texts = self._prepare(texts, "document")
            if base_device == "CPU" and _cpu_lacks_int8_dot():
                log.warning(
                    "full INT8 on a CPU without VNNI/AMX is not faster than FP32",
                    hint="measured 0.9x FP32 on AVX2; int8='weights' or FP32 are as fast here",
                )

        self.cache_root = ir_cache.cache_root(cache_dir)
        self.cache_key = self._key(self.int8)
        entry = ir_cache.lookup(self.cache_root, self.cache_key)
        self.converted = entry is None
        if entry is None:
            entry = ir_cache.store(
                self.cache_root, self.cache_key, lambda out: self._convert(out, self.int8)
            )
        self.ir_dir = entry
        self.meta = ir_cache.read_meta(entry)
        self._ov_model = self.core.read_model(str(entry / ir_cache.XML))
        self.input_names = [port.get_any_name() for port in self._ov_model.inputs]
        if self.static_shape:
            self._ov_model.reshape(
                {n: [self.batch_size, self.max_length] for n in self.input_names}
            )
        self._compiled: dict[str, Any] = {}
        log.debug(
            "openvino embedder ready",
            model=str(self.model_path),
            device=self.device_name,
            ir=str(entry),
            converted=self.converted,
            int8=self.int8,
            static_shape=self.static_shape,
        )

    @classmethod
    def conformance_instance(cls, device: Device) -> OpenVINOEmbedder:
        """The conformance kit's instance: a mock device computes on the host, so OpenVINO CPU."""
        return cls(device="CPU")

    # -- conversion ---------------------------------------------------------------------
    def _key(self, mode: Int8Mode | None) -> str:
        """The IR cache key. FP32 and weight-only keep the keys they had before full INT8
        existed (``"int8": False/True``), so their cached IRs stay valid; full INT8 adds the
        calibration digest and the quantisation recipe."""
        options: dict[str, Any] = {
            "pooling": self.config.pooling,
            "int8": {None: False, "weights": True, "full": "full"}[mode],
            "normalize": True,
        }
        if mode == "full":
            options["calibration"] = calibration.digest(self.calibration_texts, self.max_length)
            options["recipe"] = FULL_INT8_RECIPE
        return ir_cache.cache_key(self.model_path, options)

    def _fp32_ir(self) -> Path:
        """The FP32 IR entry (converted now if absent): the INT8 variants start from it."""
        key = self._key(None)
        entry = ir_cache.lookup(self.cache_root, key)
        if entry is None:
            entry = ir_cache.store(self.cache_root, key, lambda out: self._convert(out, None))
        return entry / ir_cache.XML

    def _convert(self, out_dir: Path, mode: Int8Mode | None) -> dict[str, Any]:
        """Write the IR: trace the torch encoder (FP32), compress the FP32 IR's weights
        (``"weights"``), or quantise it with calibration statistics (``"full"``)."""
        import openvino as ov

        started = time.perf_counter()
        extra: dict[str, Any] = {}
        if mode == "weights":
            model = compress_int8_weights(self.core.read_model(str(self._fp32_ir())))
        elif mode == "full":
            model = self.core.read_model(str(self._fp32_ir()))
            model = _quantize_int8(model, self._calibration_items(model))
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
            "pooling": self.config.pooling,
            "int8": mode is not None,
            "int8_mode": mode,
            **extra,
            "inputs": [port.get_any_name() for port in model.inputs],
            "dim": self.dim,
            "openvino": ov.__version__,
            "convert_seconds": round(seconds, 3),
            "created": time.time(),
        }

    def _calibration_items(self, model: Any) -> list[dict[str, np.ndarray]]:
        """One model input per calibration text, built like embed() builds a batch.

        Same prefixing (done at construction), truncation to ``max_length``, ``pad_batch``
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

        encoder = load_encoder(self.model_path, self.config.pooling)
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

    # -- compilation --------------------------------------------------------------------
    def compiled(self, kind: TextKind) -> Any:
        """The compiled model for ``kind`` (THROUGHPUT for documents, LATENCY for queries)."""
        hint = "LATENCY" if kind == "query" else "THROUGHPUT"
        if hint not in self._compiled:
            config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
            base = self.device_name.split(".")[0]
            if base == "CPU":
                # f32 by default: a bf16-capable CPU would otherwise drift from the torch vectors.
                config["INFERENCE_PRECISION_HINT"] = self.inference_precision or "f32"
                if self.num_threads:
                    config["INFERENCE_NUM_THREADS"] = int(self.num_threads)
            else:
                if self.inference_precision:
                    config["INFERENCE_PRECISION_HINT"] = self.inference_precision
                # GPU/NPU compilation is slow: let OpenVINO keep compiled blobs next to the IR.
                config["CACHE_DIR"] = str(self.cache_root / "compiled")
            self._compiled[hint] = self.core.compile_model(self._ov_model, self.device_name, config)
        return self._compiled[hint]

    # -- embedding ----------------------------------------------------------------------
    def embed(
        self, texts: Sequence[str], *, kind: TextKind = "document", batch_size: int | None = None
    ) -> np.ndarray:
        """Unit-norm float32 rows in input order, run through a queue of async infer requests."""
        prepared = self._prepare(texts, kind)
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        if not prepared:
            return out
        size = batch_size or self.batch_size
        if self.static_shape and size != self.batch_size:
            raise UsageError(
                f"batch_size {size} differs from the static batch {self.batch_size} this model "
                f"was compiled for ({self.device_name} needs static shapes)",
                hint="construct the embedder with the batch size you need",
            )
        enc = tokenize(self.tokenizer, prepared, self.max_length)
        report_truncation(enc, self.max_length, str(self.model_path))
        compiled = self.compiled(kind)
        jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        requests = self._requests(kind, compiled, jobs)
        in_flight: list[np.ndarray | None] = [None] * len(requests)

        def collect(slot: int) -> None:
            index = in_flight[slot]
            if index is not None:
                requests[slot].wait()
                out[index] = requests[slot].get_output_tensor(0).data[: len(index)]
                in_flight[slot] = None

        # A queue of async infer requests, filled round-robin: batches are length-sorted, so
        # neighbours cost about the same. No Python callback runs on OpenVINO's threads
        # (AsyncInferQueue.set_callback does, and can deadlock when a compiled model is freed).
        with progress(len(prepared), enabled=self.show_progress, description="embedding") as bar:
            try:
                for k, index in enumerate(length_sorted_batches(enc.lengths, size)):
                    slot = k % len(requests)
                    collect(slot)
                    requests[slot].start_async(self._inputs(enc, index), share_inputs=False)
                    in_flight[slot] = index
                    bar.advance(len(index))
                for slot in range(len(requests)):
                    collect(slot)
            finally:  # never leave a request running into the next call (it would be busy)
                for slot, pending in enumerate(in_flight):
                    if pending is not None:
                        requests[slot].wait()
        # Pooling already normalised; renormalising in float32 guards against INT8 drift.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def _requests(self, kind: TextKind, compiled: Any, jobs: int) -> list[Any]:
        """Infer requests for ``kind``'s compiled model, created once and reused."""
        key = f"requests-{kind}"
        if key not in self._compiled:
            self._compiled[key] = [compiled.create_infer_request() for _ in range(jobs)]
        return list(self._compiled[key])

    def _inputs(self, enc: Encoded, index: np.ndarray) -> dict[str, np.ndarray]:
        if self.static_shape:
            arrays = pad_batch(
                self.tokenizer, enc, index, pad_length=self.max_length, pad_rows=self.batch_size
            )
        else:
            arrays = pad_batch(self.tokenizer, enc, index)
        return {name: arrays[name] for name in self.input_names}


def _cpu_lacks_int8_dot() -> bool:
    """True on an x86 CPU known to lack an INT8 dot-product instruction (VNNI, AMX).

    Without one, oneDNN's INT8 GEMM (vpmaddubsw + vpmaddwd on AVX2) does about as many
    multiply-adds per cycle as FP32 FMA, so full INT8 buys accuracy loss and no speed.
    Unknown (no /proc/cpuinfo, or not x86) counts as not lacking: no warning.
    """
    from hwkit.backends.cpu import cpu_flags

    flags = cpu_flags()
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def _quantize_int8(model: Any, items: list[dict[str, np.ndarray]]) -> Any:
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
