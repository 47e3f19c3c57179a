"""Pairs to embeddings: the prefixed query and document texts, tokenised and encoded on the
device. Shared by the training step and the evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.embedder.pairs import Pair

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def texts(rows: Sequence[Pair], config: EmbedderTrainConfig) -> tuple[list[str], list[str]]:
    """(queries, documents) with the config's prefixes."""
    qp = config.query_prefix or ""
    dp = config.document_prefix or ""
    return [qp + r.query for r in rows], [dp + r.positive for r in rows]


def encode(
    encoder: Any, tokenizer: Any, batch: list[str], max_len: int, device: Device
) -> tuple[Any, int]:
    """(pooled embeddings, non-padding tokens) of ``batch`` truncated at ``max_len``."""
    enc = tokenizer(batch, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    target = device.torch_device()
    inputs = {k: v.to(target) for k, v in enc.items() if k in ENCODER_INPUTS}
    return encoder(**inputs), int(enc["attention_mask"].sum())
