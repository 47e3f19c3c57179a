"""The training loss over a batch of groups: logits shaped ``[groups, 1 + negatives]``,
column 0 the relevant document.

Default ``bce``: binary cross-entropy on every (query, document) pair, label 1 for the
positive and 0 for each hard negative, the positive weighted by the number of negatives.
This is what sentence-transformers' CrossEncoder recipes do for MS MARCO-style data
(``training_ms_marco_bce.py``; ``rerankers/training_gooaq_bce.py``: mined hard negatives
in "labeled-pair" form, ``BinaryCrossEntropyLoss(pos_weight=num_hard_negatives)``), and how
the published ``cross-encoder/ms-marco-*`` rerankers were trained. It is chosen because it
scores each pair on its own absolute scale (a logit that means the same across queries, so
it can be thresholded or compared between queries) and it needs no fixed group structure.

``listwise``: softmax cross-entropy of the positive against its own negatives (sentence-
transformers' MultipleNegativesRankingLoss without in-batch negatives). It only orders
documents within a query; kept for comparison.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

LossName = Literal["bce", "listwise"]


def group_loss(logits: torch.Tensor, kind: LossName) -> torch.Tensor:
    """Per-group losses (shape ``[groups]``) of ``logits`` ``[groups, 1 + negatives]``."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    groups, size = logits.shape
    if kind == "listwise":
        target = torch.zeros(groups, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    negatives = max(1, size - 1)
    pairs = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    # pos_weight = negatives, as BCEWithLogitsLoss(pos_weight=...), averaged over the pairs
    weights = torch.ones_like(logits)
    weights[:, 0] = float(negatives)
    return (pairs * weights).mean(dim=1)


def batch_loss(logits: torch.Tensor, kind: LossName) -> torch.Tensor:
    """The mean over groups: one optimizer step's loss."""
    return group_loss(logits, kind).mean()
