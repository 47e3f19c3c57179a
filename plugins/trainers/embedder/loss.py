"""In-batch negatives (InfoNCE): every query against every document of the batch, with
documents that are also relevant to the query masked out instead of pushed away."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from hwkit.plugins.trainers.embedder.pairs import Pair

if TYPE_CHECKING:
    import torch


def positives_by_query(pairs: Iterable[Pair]) -> dict[str, set[str]]:
    """Every document key known to be relevant to each query key."""
    out: dict[str, set[str]] = {}
    for pair in pairs:
        out.setdefault(pair.query_key, set()).add(pair.positive_key)
    return out


def false_negative_mask(pairs: Sequence[Pair], positives_of: dict[str, set[str]]) -> torch.Tensor:
    """True where column j's document is also relevant to row i's query (j != i)."""
    import torch

    n = len(pairs)
    mask = torch.zeros((n, n), dtype=torch.bool)
    for i, pi in enumerate(pairs):
        relevant = positives_of.get(pi.query_key, set())
        for j, pj in enumerate(pairs):
            if j != i and (pj.positive_key in relevant or pj.positive_key == pi.positive_key):
                mask[i, j] = True
    return mask


def info_nce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    *,
    symmetric: bool = False,
) -> torch.Tensor:
    """Cross-entropy of each query against all documents of the batch; row i's positive is i."""
    import torch
    import torch.nn.functional as F

    scores = (queries @ documents.T) / temperature
    scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    loss = F.cross_entropy(scores, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, labels)) / 2
    return loss
