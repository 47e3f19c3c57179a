"""Seeded train/validation split, grouped by normalised prompt so copies of one question (kept
with ``dedupe = "none"``, or several pairs from one prompt) never straddle the split."""

from __future__ import annotations

import hashlib
import random

from hwkit.plugins.data.example import Example, normalise


def group_key(ex: Example) -> str:
    return hashlib.blake2b(normalise(ex.prompt_text).encode("utf-8"), digest_size=12).hexdigest()


def split(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic for a given seed and input; keeps the input order inside each part.

    Groups are shuffled by the seed and go to validation until it holds the requested
    share of examples (at least one group when the fraction is above zero and there are
    two groups or more).
    """
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(group_key(ex), []).append(i)
    if fraction <= 0 or len(groups) < 2:
        return list(examples), []
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    target = max(1, round(fraction * len(examples)))
    val_idx: set[int] = set()
    for key in keys:
        if len(val_idx) >= target:
            break
        members = groups[key]
        # a big group that would overshoot is skipped unless validation is still empty
        if val_idx and len(val_idx) + len(members) > target + max(1, target // 10):
            continue
        val_idx.update(members)
    if len(val_idx) == len(examples):  # never leave training empty
        val_idx.difference_update(groups[keys[-1]])
    train = [ex for i, ex in enumerate(examples) if i not in val_idx]
    val = [ex for i, ex in enumerate(examples) if i in val_idx]
    return train, val
