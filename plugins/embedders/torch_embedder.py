"""The torch embedder: transformers ``AutoModel`` + the model's own pooling, on the planned
device in the planned dtype."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import TextKind
from hwkit.errors import UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders.base import ModelEmbedder
from hwkit.plugins.embedders.batching import (
    length_sorted_batches,
    pad_batch,
    progress,
    report_truncation,
    tokenize,
)

if TYPE_CHECKING:
    from hwkit.device import Device

log = get_logger(__name__)


class TorchEmbedder(ModelEmbedder):
    """Embeds with transformers on a hwkit Device (cpu, cuda, xpu, or a MockDevice).

    The encoder's weights are loaded in the plan's dtype (float32 without a plan) and
    batches are the plan's micro-batch.
    """

    name = "torch"
    runtime = "transformers"

    def _load(self) -> None:
        """The encoder in the plan's dtype, placed on the device."""
        import torch

        from hwkit.plugins.embedders.pooling import load_encoder

        if self.device.torch_device() is None:
            raise UsageError(
                f"{self.device.id} has no torch device",
                hint="use the openvino embedder for NPUs",
            )
        encoder = load_encoder(self.model_path, self.config.pooling, dtype=self.dtype)
        self.encoder: Any = self.device.place(encoder)
        self._torch = torch
        log.debug(
            "torch embedder ready",
            model=str(self.model_path),
            device=self.device.id,
            dtype=self.dtype,
            batch_size=self.batch_size,
            pooling=self.config.pooling,
            max_length=self.max_length,
        )

    @classmethod
    def conformance_instance(cls, device: Device) -> TorchEmbedder:
        """The conformance kit's instance: the default model on the kit's (mock) device."""
        return cls(device=device)

    def embed(
        self, texts: Sequence[str], *, kind: TextKind = "document", batch_size: int | None = None
    ) -> np.ndarray:
        """Unit-norm float32 rows in input order; batches are formed by token length."""
        prepared = self._prepare(texts, kind)
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        if not prepared:
            return out
        enc = tokenize(self.tokenizer, prepared, self.max_length)
        report_truncation(enc, self.max_length, str(self.model_path))
        torch = self._torch
        target = self.device.torch_device()
        batches = length_sorted_batches(enc.lengths, batch_size or self.batch_size)
        with (
            progress(len(prepared), enabled=self.show_progress, description="embedding") as bar,
            torch.inference_mode(),
        ):
            for index in batches:
                arrays = pad_batch(self.tokenizer, enc, index)
                inputs = {k: torch.from_numpy(v).to(target) for k, v in arrays.items()}
                vectors = self.encoder(**inputs)
                out[index] = vectors.float().cpu().numpy()
                bar.advance(len(index))
        return out
