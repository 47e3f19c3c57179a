"""The OpenVINO embedder: the torch encoder converted once to IR, compiled for CPU, GPU or NPU.

Pooling and normalisation are part of the converted graph, so the compiled model returns
sentence vectors. Corpora run under the THROUGHPUT hint through a queue of async infer requests;
queries under the LATENCY hint. An NPU compiles static shapes only: the model is reshaped
to ``(batch_size, max_length)`` and every batch is padded to it.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import Embedder, TextKind
from hwkit.errors import UnavailableError, UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders import ir_cache
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

if TYPE_CHECKING:
    from hwkit.device import Device

log = get_logger(__name__)

OUTPUT_NAME = "sentence_embedding"
# hwkit device kind -> OpenVINO device name
OV_DEVICE_NAMES = {"cpu": "CPU", "xpu": "GPU", "gpu": "GPU", "npu": "NPU"}
STATIC_ONLY = ("NPU",)


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


class OpenVINOEmbedder(PrefixMixin, Embedder):
    """Embeds with an OpenVINO-compiled copy of the model (FP32 or INT8 weights)."""

    name = "openvino"
    # How many IR conversions this process made (tests check that a cache hit converts nothing).
    conversions = 0

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: Device | str | None = "CPU",
        int8: bool = False,
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
    ) -> None:
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
        self.int8 = int8
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

        self.cache_root = ir_cache.cache_root(cache_dir)
        self.cache_key = self._key(int8=bool(int8))
        entry = ir_cache.lookup(self.cache_root, self.cache_key)
        self.converted = entry is None
        if entry is None:
            entry = ir_cache.store(self.cache_root, self.cache_key, self._convert)
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
            int8=int8,
            static_shape=self.static_shape,
        )

    @classmethod
    def conformance_instance(cls, device: Device) -> OpenVINOEmbedder:
        """The conformance kit's instance: a mock device computes on the host, so OpenVINO CPU."""
        return cls(device="CPU")

    # -- conversion ---------------------------------------------------------------------
    def _key(self, *, int8: bool) -> str:
        options = {"pooling": self.config.pooling, "int8": int8, "normalize": True}
        return ir_cache.cache_key(self.model_path, options)

    def _fp32_ir(self) -> Path:
        """The FP32 IR entry (converted now if absent): the INT8 variant starts from it."""
        key = self._key(int8=False)
        entry = ir_cache.lookup(self.cache_root, key)
        if entry is None:
            entry = ir_cache.store(self.cache_root, key, lambda out: self._convert(out, int8=False))
        return entry / ir_cache.XML

    def _convert(self, out_dir: Path, *, int8: bool | None = None) -> dict[str, Any]:
        """Write the IR: trace the torch encoder (FP32), or compress the FP32 IR (INT8)."""
        import openvino as ov

        int8 = self.int8 if int8 is None else int8
        started = time.perf_counter()
        if int8:
            model = _compress_int8(self.core.read_model(str(self._fp32_ir())))
        else:
            model = self._trace()
        ov.save_model(model, str(out_dir / ir_cache.XML), compress_to_fp16=False)
        type(self).conversions += 1
        seconds = time.perf_counter() - started
        log.info(
            "converted model to OpenVINO IR",
            model=str(self.model_path),
            int8=int8,
            seconds=round(seconds, 2),
            cache=str(self.cache_root),
        )
        return {
            "model_path": str(self.model_path),
            "pooling": self.config.pooling,
            "int8": int8,
            "inputs": [port.get_any_name() for port in model.inputs],
            "dim": self.dim,
            "openvino": ov.__version__,
            "convert_seconds": round(seconds, 3),
            "created": time.time(),
        }

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


def _compress_int8(model: Any) -> Any:
    """INT8 weight compression with NNCF (weights int8, activations float)."""
    try:
        import nncf
    except ImportError as exc:
        raise UnavailableError(
            "int8=True needs NNCF, which is not installed", hint="pip install 'hwkit[nncf]'"
        ) from exc
    from nncf.common.logging.logger import nncf_logger

    # NNCF prints a statistics table to stdout at INFO; hwkit logs the conversion itself.
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    finally:
        nncf_logger.setLevel(level)
