"""The torch embedder: transformers ``AutoModel`` + the model's own pooling, on a hwkit Device."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import Embedder, TextKind
from hwkit.errors import UsageError
from hwkit.log import get_logger
from hwkit.plugins.embedders.batching import (
    length_sorted_batches,
    pad_batch,
    progress,
    report_truncation,
    tokenize,
)
from hwkit.plugins.embedders.model_config import (
    EmbedderModelConfig,
    read_model_config,
    resolve_model_path,
)

if TYPE_CHECKING:
    from hwkit.device import Device

log = get_logger(__name__)

KINDS = ("query", "document")


def default_device() -> Device:
    """The CPU device from hwkit's CPU backend (no plugin loading needed)."""
    from hwkit.backends.cpu import CPUDevice

    return CPUDevice()


def resolve_device(device: Device | str | None) -> Device:
    """A hwkit Device from a Device, a device id such as ``"cuda:0"``, or None (the CPU)."""
    if device is None:
        return default_device()
    if isinstance(device, str):
        from hwkit.runtime import Runtime

        return Runtime.load().device(device)
    return device


def effective_max_length(
    config: EmbedderModelConfig, tokenizer: Any, model_config: Any, requested: int | None
) -> int:
    """The smallest of what was asked, what the model was trained with, and what it can hold."""
    limits = [requested, config.max_seq_length]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions)
    chosen = min((x for x in limits if x), default=512)
    if requested is not None and requested < 2:
        raise UsageError(f"max_length must be at least 2 tokens, got {requested}")
    return int(chosen)


class PrefixMixin:
    """Query/document instruction prefixes (bge's query instruction, e5's "query: ")."""

    config: EmbedderModelConfig
    query_prefix: str
    document_prefix: str

    def _init_prefixes(self, query_prefix: str | None, document_prefix: str | None) -> None:
        self.query_prefix = self.config.prefix("query") if query_prefix is None else query_prefix
        self.document_prefix = (
            self.config.prefix("document") if document_prefix is None else document_prefix
        )

    def _prepare(self, texts: Sequence[str], kind: TextKind) -> list[str]:
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {KINDS}, got {kind!r}")
        if isinstance(texts, str):
            raise UsageError(
                "embed() takes a list of texts, got a single string", hint="wrap it: [text]"
            )
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageError(f"text {i} is {type(text).__name__}, not str")
            text = prefix + text
            out.append(text.lower() if self.config.do_lower_case else text)
        return out


class TorchEmbedder(PrefixMixin, Embedder):
    """Embeds with transformers on a hwkit Device (cpu, cuda, xpu, or a MockDevice)."""

    name = "torch"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: Device | str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        *,
        dtype: str | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        show_progress: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        from hwkit.plugins.embedders.pooling import load_encoder

        self.model_path: Path = resolve_model_path(model)
        self.config = read_model_config(self.model_path)
        self.device: Device = resolve_device(device)
        if self.device.torch_device() is None:
            raise UsageError(
                f"{self.device.id} has no torch device",
                hint="use the openvino embedder for NPUs",
            )
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        encoder = load_encoder(self.model_path, self.config.pooling, dtype=dtype)
        self.max_length = effective_max_length(
            self.config, self.tokenizer, encoder.model.config, max_length
        )
        self.encoder = self.device.place(encoder)
        self.dim = int(encoder.model.config.hidden_size)
        self._init_prefixes(query_prefix, document_prefix)
        self._torch = torch
        log.debug(
            "torch embedder ready",
            model=str(self.model_path),
            device=self.device.id,
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
