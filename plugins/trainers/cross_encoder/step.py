"""One optimizer step's forward and backward over a batch of groups, ``chunk`` groups at a
time. A group is never split: the listwise loss needs all of a query's scores together,
and BCE does not mind. Each chunk's loss is scaled by its share of the groups, so the
summed gradient is the whole batch's whatever the chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.cross_encoder.data import Group
from hwkit.plugins.trainers.cross_encoder.loss import LossName, group_loss
from hwkit.plugins.trainers.cross_encoder.scoring import pair_logits

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device
    from hwkit.plan import Plan


def flat_pairs(groups: Sequence[Group]) -> tuple[list[str], list[str]]:
    """(queries, documents) of every pair, group by group, positive first."""
    queries: list[str] = []
    documents: list[str] = []
    for g in groups:
        docs = g.documents
        queries += [g.query] * len(docs)
        documents += docs
    return queries, documents


def group_logits(
    model: Any, tokenizer: Any, groups: Sequence[Group], *, max_len: int, device: Device
) -> tuple[torch.Tensor, int]:
    """Logits ``[len(groups), 1 + negatives]`` and the tokens they took."""
    queries, documents = flat_pairs(groups)
    logits, tokens = pair_logits(
        model, tokenizer, queries, documents, max_len=max_len, device=device
    )
    return logits.view(len(groups), -1), tokens


def train_step(
    model: Any,
    tokenizer: Any,
    groups: list[Group],
    *,
    chunk: int,
    loss: LossName,
    plan: Plan,
    device: Device,
) -> tuple[float, int]:
    """Forward and backward for one batch; returns (mean loss, tokens)."""
    total, tokens = 0.0, 0
    for start in range(0, len(groups), chunk):
        part = groups[start : start + chunk]
        with device.autocast(plan.dtype):
            logits, used = group_logits(
                model, tokenizer, part, max_len=plan.max_seq_len, device=device
            )
        value = group_loss(logits, loss).sum() / len(groups)
        value.backward()
        total += float(value.detach())
        tokens += used
    return total, tokens
