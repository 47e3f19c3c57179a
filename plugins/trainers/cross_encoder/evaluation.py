"""What the cross-encoder trainer reports: nDCG@10 of BM25 -> rerank on held-out queries,
and the loss on a fixed probe of training groups (no dropout) before and after.

nDCG@10 is computed here (linear gain, log2 discount, the ideal ranking from every judged
relevant document, as BEIR's pytrec_eval and ranx do) rather than through ranx: ranx's
first call in a process compiles numba kernels for tens of seconds, longer than a short
run's whole evaluation. ``bench/retrieval_scifact.py --rerank`` gives the ranx figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.cross_encoder.data import Group
from hwkit.plugins.trainers.cross_encoder.loss import LossName, group_loss
from hwkit.plugins.trainers.cross_encoder.mining import Candidates
from hwkit.plugins.trainers.cross_encoder.scoring import pair_logits
from hwkit.plugins.trainers.cross_encoder.step import group_logits

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan

PROBE_GROUPS = 64  # training groups the before/after loss is measured on


def ndcg_at(ranked: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranked list against one query's judgements (0 when nothing is relevant)."""
    gains = sorted((g for g in relevance.values() if g > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    if ideal == 0:
        return 0.0
    dcg = sum(relevance.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    return dcg / ideal


def mean_ndcg(runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 over every judged query (one with no run counts as 0)."""
    if not qrels:
        return 0.0
    return sum(ndcg_at(runs.get(q, []), rel) for q, rel in qrels.items()) / len(qrels)


def bm25_ndcg(held_out: Candidates) -> float:
    """The first stage alone, the number reranking has to beat."""
    return mean_ndcg({q: [d for d, _ in hits] for q, hits in held_out.hits.items()}, held_out.qrels)


def rerank_ndcg(
    model: Any, tokenizer: Any, held_out: Candidates, *, plan: Plan, device: Device
) -> float:
    """nDCG@10 after the model reorders each query's BM25 candidates (ties keep BM25 order)."""
    import numpy as np
    import torch

    was_training = model.training
    model.eval()
    batch = max(1, plan.micro_batch)
    runs: dict[str, list[str]] = {}
    with torch.no_grad():
        for qid, hits in held_out.hits.items():
            scores: list[float] = []
            for start in range(0, len(hits), batch):
                part = hits[start : start + batch]
                with device.autocast(plan.dtype):
                    logits, _ = pair_logits(
                        model,
                        tokenizer,
                        [held_out.queries[qid]] * len(part),
                        [text for _, text in part],
                        max_len=plan.max_seq_len,
                        device=device,
                    )
                scores += logits.float().cpu().tolist()
            order = np.argsort(-np.asarray(scores), kind="stable")
            runs[qid] = [hits[int(i)][0] for i in order]
    model.train(was_training)
    return mean_ndcg(runs, held_out.qrels)


def probe_loss(
    model: Any,
    tokenizer: Any,
    groups: Sequence[Group],
    *,
    loss: LossName,
    chunk: int,
    plan: Plan,
    device: Device,
) -> float:
    """Mean loss over ``groups`` without dropout or gradients."""
    import torch

    if not groups:
        return math.nan
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(groups), chunk):
            part = list(groups[start : start + chunk])
            with device.autocast(plan.dtype):
                logits, _ = group_logits(
                    model, tokenizer, part, max_len=plan.max_seq_len, device=device
                )
            total += float(group_loss(logits, loss).sum())
    model.train(was_training)
    return total / len(groups)
