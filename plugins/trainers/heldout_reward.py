"""The held-out reward: greedy completions for held-out prompts, scored by the run's rewards.

A reward-trained run is judged the way it was trained: the composite reward (and each
component) on prompts it never saw, decoded greedily so two runs compare without sampling
noise. Reported before and after training, like the SFT trainer's held-out loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hwkit.plugins.rewards.composite import CompositeReward

BATCH = 8  # prompts decoded together


def generate(
    model: Any, tokenizer: Any, prompts: Sequence[Any], *, max_new_tokens: int
) -> list[str]:
    """Greedy completions (chat template applied, left-padded batches), as text."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), BATCH):
            chunk = [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                for p in prompts[start : start + BATCH]
            ]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, enc["input_ids"].shape[1] :]
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts


def held_out_reward(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    composite: CompositeReward,
    *,
    max_new_tokens: int,
) -> dict[str, Any]:
    """``eval_reward`` (the composite's mean) and ``eval_reward/NAME`` per component, over
    ``rows`` (trl prompt rows: ``prompt`` messages plus the columns rewards read)."""
    from hwkit.plugins.trainers.grpo import text_of

    completions = generate(
        model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=max_new_tokens
    )
    prompts = [text_of(r["prompt"]) for r in rows]
    columns = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    metrics: dict[str, Any] = {"eval_rows": len(rows)}
    values = composite.score_components(prompts, completions, columns)
    for key, scores in values.items():
        metrics[f"eval_reward/{key}"] = _mean(scores)
    metrics["eval_reward"] = _mean(composite.combine(values))
    metrics["samples"] = [
        {"prompt": p[-200:], "completion": c}
        for p, c in zip(prompts[:3], completions[:3], strict=False)
    ]
    return metrics


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
