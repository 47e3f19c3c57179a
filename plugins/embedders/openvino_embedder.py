"""The OpenVINO embedder: the converted IR compiled for the planned CPU, GPU or NPU.

Pooling and normalisation are part of the converted graph (:mod:`.openvino_convert`), so
the compiled model returns sentence vectors. Corpora run under the THROUGHPUT hint through
a queue of async infer requests; queries under the LATENCY hint. An NPU compiles static
shapes only: the model is reshaped to ``(batch_size, max_length)`` and every batch is
padded to it.

The class declares ``runtime = "openvino"``, so the core plans it only on devices whose
capabilities list the OpenVINO runtime; the hwkit device it is handed is mapped to an
OpenVINO device name by its kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import TextKind
from hwkit.errors import UnavailableError, UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders import calibration, ir_cache
from hwkit.plugins.embedders.base import ModelEmbedder
from hwkit.plugins.embedders.batching import (
    Encoded,
    length_sorted_batches,
    pad_batch,
    progress,
    report_truncation,
    tokenize,
)
from hwkit.plugins.embedders.openvino_convert import Int8Mode, IRConverter, int8_mode

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan

log = get_logger(__name__)

# hwkit device kind -> OpenVINO device name
OV_DEVICE_NAMES = {"cpu": "CPU", "xpu": "GPU", "gpu": "GPU", "npu": "NPU"}
STATIC_ONLY = ("NPU",)
# plan dtype -> OpenVINO INFERENCE_PRECISION_HINT (CPU and GPU; an NPU picks its own)
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def openvino_device_name(device: Device) -> str:
    """``"CPU"``, ``"GPU.1"``, ``"NPU"`` for a hwkit Device, by its kind."""
    kind = OV_DEVICE_NAMES.get(device.kind)
    if kind is None:
        raise UsageError(
            f"OpenVINO cannot run on {device.id} ({device.kind})",
            hint="use the torch embedder for this device",
        )
    return f"{kind}.{device.index}" if kind == "GPU" and device.index else kind


class OpenVINOEmbedder(ModelEmbedder):
    """Embeds with an OpenVINO-compiled copy of the model (FP32, INT8 weights, or full INT8)."""

    name = "openvino"
    runtime = "openvino"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: Device | None = None,
        plan: Plan | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        int8: bool | Int8Mode = False,
        cache_dir: str | os.PathLike[str] | None = None,
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
        ``inference_precision`` overrides the precision the plan's dtype asks for.
        """
        import openvino as ov

        super().__init__(
            model,
            device=device,
            plan=plan,
            batch_size=batch_size,
            max_length=max_length,
            query_prefix=query_prefix,
            document_prefix=document_prefix,
            show_progress=show_progress,
        )
        self.device_name = openvino_device_name(self.device)
        self.core = ov.Core()
        available = self.core.available_devices
        if not any(d == self.device_name or d.split(".")[0] == self.device_name for d in available):
            raise UnavailableError(
                f"OpenVINO device {self.device_name} (for {self.device.id}) is not available",
                hint=f"OpenVINO sees {', '.join(available) or 'no device'}",
            )
        self.int8: Int8Mode | None = int8_mode(int8)
        self.num_threads = num_threads
        base_device = self.device_name.split(".")[0]
        self.inference_precision = inference_precision or (
            None if base_device in STATIC_ONLY else PRECISION_HINTS.get(self.dtype)
        )
        self.static_shape = base_device in STATIC_ONLY if static_shape is None else static_shape
        # Full INT8 only: the texts as embed() prepares them (prefix, lower case), hashed
        # into the cache key so another calibration set makes another IR.
        prepared: list[str] = []
        if self.int8 == "full":
            texts = (
                calibration.bundled_texts()
                if calibration_texts is None
                else calibration.check_texts(calibration_texts)
            )
            prepared = self._prepare(texts, "document")
            if base_device == "CPU" and _lacks_int8_dot(self.device):
                log.warning(
                    "full INT8 on a CPU without VNNI/AMX is not faster than FP32",
                    hint="measured 0.9x FP32 on AVX2; int8='weights' or FP32 are as fast here",
                )
        self.converter = IRConverter(
            self.model_path,
            pooling=self.config.pooling,
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            dim=self.dim,
            cache_root=ir_cache.cache_root(cache_dir),
            calibration_texts=prepared,
        )
        self.ir_dir, self.converted = self.converter.entry(self.int8)
        self.meta = ir_cache.read_meta(self.ir_dir)
        self._ov_model = self.core.read_model(str(self.ir_dir / ir_cache.XML))
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
            ir=str(self.ir_dir),
            converted=self.converted,
            int8=self.int8,
            static_shape=self.static_shape,
        )

    @classmethod
    def conformance_instance(cls, device: Device) -> OpenVINOEmbedder:
        """The conformance kit's instance: the default model on the kit's (mock) device;
        a mock CPU device maps to OpenVINO's CPU, which computes on the host as it does."""
        return cls(device=device)

    @property
    def cache_root(self) -> Path:
        """Where this embedder's IR (and GPU/NPU compiled blobs) are cached."""
        return self.converter.cache_root

    @property
    def calibration_texts(self) -> list[str]:
        return self.converter.calibration_texts

    # -- compilation --------------------------------------------------------------------
    def compiled(self, kind: TextKind) -> Any:
        """The compiled model for ``kind`` (THROUGHPUT for documents, LATENCY for queries)."""
        hint = "LATENCY" if kind == "query" else "THROUGHPUT"
        if hint not in self._compiled:
            config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
            if self.inference_precision:
                config["INFERENCE_PRECISION_HINT"] = self.inference_precision
            if self.device_name.split(".")[0] == "CPU":
                if self.num_threads:
                    config["INFERENCE_NUM_THREADS"] = int(self.num_threads)
            else:
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


def _lacks_int8_dot(device: Device) -> bool:
    """True on an x86 CPU known to lack an INT8 dot-product instruction (VNNI, AMX).

    Without one, oneDNN's INT8 GEMM (vpmaddubsw + vpmaddwd on AVX2) does about as many
    multiply-adds per cycle as FP32 FMA, so full INT8 buys accuracy loss and no speed.
    Read from the device's capability features; unknown (no avx2 listed) counts as not
    lacking: no warning.
    """
    features = set(device.capabilities.features)
    return "avx2" in features and not features & {"vnni", "amx"}
