"""Score fusion for hybrid retrieval: min-max convex combination and reciprocal rank fusion.

Bruch et al. (2023, "An Analysis of Fusion Functions for Hybrid Retrieval") find a convex
combination of normalised scores stronger than RRF, which is sensitive to its ``k``; both
are here, convex combination is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def min_max(scores: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant list maps to zeros (it carries no ranking signal)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo <= 0.0:
        return np.zeros_like(scores)
    return (scores - lo) / (hi - lo)


def convex(lexical: np.ndarray, dense: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha * minmax(dense) + (1 - alpha) * minmax(lexical)`` over the same candidates."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * min_max(dense) + (1.0 - alpha) * min_max(lexical)


def rrf(rankings: Sequence[Sequence[int]], n: int, k: float = 60.0) -> np.ndarray:
    """Reciprocal rank fusion: ``sum over lists of 1 / (k + rank)``, rank from 1.

    ``rankings`` are candidate positions (0..n-1), best first; a candidate absent from
    a list gets nothing from it.
    """
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    out = np.zeros(n, dtype=np.float64)
    for ranking in rankings:
        for rank, pos in enumerate(ranking, start=1):
            out[pos] += 1.0 / (k + rank)
    return out
