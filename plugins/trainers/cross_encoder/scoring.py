"""(query, document) pairs through the cross-encoder: one logit each. Tokenised as the
reranker does at search time (query first, ``longest_first`` truncation at the plan's
length), so what is trained is what :class:`RerankRetriever` scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device


def pair_logits(
    model: Any,
    tokenizer: Any,
    queries: Sequence[str],
    documents: Sequence[str],
    *,
    max_len: int,
    device: Device,
) -> tuple[torch.Tensor, int]:
    """(logits ``[len(queries)]``, non-padding tokens) of the pairs, on ``device``."""
    enc = tokenizer(
        list(queries),
        list(documents),
        padding=True,
        truncation="longest_first",
        max_length=max_len,
        return_tensors="pt",
    )
    target = device.torch_device()
    logits = model(**{k: v.to(target) for k, v in enc.items()}).logits
    return logits[:, 0], int(enc["attention_mask"].sum())
