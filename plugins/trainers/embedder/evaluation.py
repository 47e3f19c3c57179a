"""The held-out number the embedder trainer reports: mean in-batch InfoNCE loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.embedder.encoding import encode, texts
from hwkit.plugins.trainers.embedder.loss import false_negative_mask, info_nce, positives_by_query
from hwkit.plugins.trainers.embedder.pairs import Pair

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig


def contrastive_loss(
    encoder: Any,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    config: EmbedderTrainConfig,
    plan: Plan,
    device: Device,
) -> float:
    """Mean in-batch InfoNCE loss over ``pairs`` in batches of the plan's size (no dropout)."""
    import torch

    positives_of = positives_by_query(pairs)
    batch = max(2, min(plan.effective_batch, len(pairs)))
    step = plan.micro_batch
    was_training = encoder.training
    encoder.eval()
    losses, weights = [], []
    with torch.no_grad():
        for i in range(0, len(pairs) - 1, batch):
            rows = list(pairs[i : i + batch])
            if len(rows) < 2:
                continue
            queries, docs = texts(rows, config)
            q_parts, d_parts = [], []
            q_len, d_len = config.query_max_len, plan.max_seq_len
            for a in range(0, len(rows), step):
                q, _ = encode(encoder, tokenizer, queries[a : a + step], q_len, device)
                d, _ = encode(encoder, tokenizer, docs[a : a + step], d_len, device)
                q_parts.append(q.float())
                d_parts.append(d.float())
            mask = false_negative_mask(rows, positives_of)
            loss = info_nce(torch.cat(q_parts), torch.cat(d_parts), mask, config.temperature)
            losses.append(float(loss) * len(rows))
            weights.append(len(rows))
    encoder.train(was_training)
    return sum(losses) / max(1, sum(weights))
