"""One contrastive optimizer step's forward and backward, within the memory the chunk allows.

When the chunk (micro-batch) is smaller than the batch, the loss is computed with gradient
caching (Gao et al., 2021, as sentence-transformers' CachedMultipleNegativesRankingLoss
does): embed the whole batch without graphs, take the loss's gradient with respect to the
embeddings, then re-run each chunk with gradients (replaying the RNG so dropout masks
match) and back-propagate that cached gradient. The negatives are the full batch's,
whatever the memory allows, so a smaller chunk never changes what is learned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.embedder.encoding import encode, texts
from hwkit.plugins.trainers.embedder.loss import false_negative_mask, info_nce
from hwkit.plugins.trainers.embedder.pairs import Pair

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig

RngState = tuple[Any, Any]  # (CPU generator state, CUDA generator states or None)


def contrastive_step(
    encoder: Any,
    tokenizer: Any,
    rows: list[Pair],
    positives_of: dict[str, set[str]],
    *,
    chunk: int,
    config: EmbedderTrainConfig,
    plan: Plan,
    device: Device,
) -> tuple[float, int]:
    """Forward and backward for one contrastive batch; returns (loss, tokens)."""
    import torch

    queries, docs = texts(rows, config)
    mask = false_negative_mask(rows, positives_of)
    q_len, d_len = config.query_max_len, plan.max_seq_len
    if chunk >= len(rows):  # everything fits: plain backward, no cache needed
        with device.autocast(plan.dtype):
            q, qt = encode(encoder, tokenizer, queries, q_len, device)
            d, dt = encode(encoder, tokenizer, docs, d_len, device)
        loss = info_nce(q.float(), d.float(), mask, config.temperature, symmetric=config.symmetric)
        loss.backward()
        return float(loss.detach()), qt + dt
    # Gradient cache: embeddings without graphs, loss gradient, then chunk-wise backward.
    spans = [(i, min(i + chunk, len(rows))) for i in range(0, len(rows), chunk)]
    states: list[RngState] = []
    q_parts, d_parts, tokens = [], [], 0
    with torch.no_grad():
        for a, b in spans:
            states.append(rng_state())
            with device.autocast(plan.dtype):
                q, qt = encode(encoder, tokenizer, queries[a:b], q_len, device)
                d, dt = encode(encoder, tokenizer, docs[a:b], d_len, device)
            q_parts.append(q.float())
            d_parts.append(d.float())
            tokens += qt + dt
    q_all = torch.cat(q_parts).requires_grad_()
    d_all = torch.cat(d_parts).requires_grad_()
    loss = info_nce(q_all, d_all, mask, config.temperature, symmetric=config.symmetric)
    loss.backward()
    assert q_all.grad is not None and d_all.grad is not None
    for (a, b), state in zip(spans, states, strict=True):
        with torch.random.fork_rng(devices=rng_devices(device)):
            set_rng_state(state)  # the same dropout masks as the cached pass
            with device.autocast(plan.dtype):
                q, _ = encode(encoder, tokenizer, queries[a:b], q_len, device)
                d, _ = encode(encoder, tokenizer, docs[a:b], d_len, device)
            surrogate = (q.float() * q_all.grad[a:b]).sum() + (d.float() * d_all.grad[a:b]).sum()
            surrogate.backward()
    return float(loss.detach()), tokens


def rng_devices(device: Device) -> list[Any]:
    """The CUDA devices whose generators ``fork_rng`` must save (none off CUDA)."""
    target = device.torch_device()
    if target is not None and target.type == "cuda":
        return [target.index or 0]
    return []


def rng_state() -> RngState:
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def set_rng_state(state: RngState) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
