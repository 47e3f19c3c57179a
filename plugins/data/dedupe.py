"""Duplicate removal: exact (hash of the normalised text) and near (MinHash LSH on character
5-gram shingles via datasketch, each candidate confirmed by its true Jaccard similarity).

The first occurrence is kept; later ones go to rejects naming the row they duplicate.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from hwkit.extras import require
from hwkit.plugins.data.example import Example, normalise
from hwkit.plugins.data.records import Ledger

SHINGLE = 5
NUM_PERM = 128


def _digest(text: str) -> str:
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, k: int = SHINGLE) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character k-grams of the normalised text.

    Vectorised: a Python set of substrings and a hash call per shingle took most of the
    time on long transcripts (HH-RLHF).
    """
    norm = normalise(text)
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size < k:
        codes = np.pad(codes, (0, k - codes.size))
    windows = np.lib.stride_tricks.sliding_window_view(codes, k)
    h = np.zeros(windows.shape[0], dtype=np.uint64)
    for j in range(k):  # polynomial combine (wraps mod 2**64), then a 64 -> 32 bit mix
        h = h * np.uint64(0x100000001B3) + windows[:, j]
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return np.unique(h & np.uint64(0xFFFFFFFF))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = int(np.intersect1d(a, b, assume_unique=True).size)
    union = int(a.size + b.size) - inter
    return inter / union if union else 1.0


def _where(ex: Example) -> str:
    return ex.sources[0].where()


def _drop(ex: Example, ledger: Ledger, reason: str, detail: str) -> None:
    for rec in ex.sources:
        ledger.note(rec, reason, detail)


def exact(examples: list[Example], ledger: Ledger) -> list[Example]:
    seen: dict[str, Example] = {}
    out = []
    for ex in examples:
        key = _digest(ex.dedupe_text())
        first = seen.get(key)
        if first is not None:
            _drop(ex, ledger, "duplicate", f"same text as {_where(first)}")
            continue
        seen[key] = ex
        out.append(ex)
    return out


def near(examples: list[Example], ledger: Ledger, threshold: float) -> list[Example]:
    """Exact pass first (cheap), then MinHash LSH for the near ones."""
    examples = exact(examples, ledger)
    index = ShingleIndex(threshold)
    kept: list[Example] = []
    for i, ex in enumerate(examples):
        sketch = index.sketch(ex.dedupe_text())
        best = index.match(sketch)
        if best is not None:
            first = examples[int(best[0])]
            _drop(
                ex,
                ledger,
                "near_duplicate",
                f"Jaccard {best[1]:.2f} >= {threshold:g} with {_where(first)}",
            )
            continue
        index.add(str(i), sketch)
        kept.append(ex)
    return kept


class ShingleIndex:
    """Texts kept so far, found again by MinHash LSH over dedupe.py's character shingles and
    confirmed by the true Jaccard similarity. ``near`` dedupes a dataset with it; ``hwkit data
    augment`` keeps generated rows apart from their sources and each other."""

    def __init__(self, threshold: float) -> None:
        datasketch = require("datasketch", purpose="near-duplicate detection")
        self.threshold = threshold
        self._minhash = datasketch.MinHash
        self._template = datasketch.MinHash(num_perm=NUM_PERM, seed=1)
        self._lsh = datasketch.MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=NUM_PERM)
        self._shingles: dict[str, np.ndarray] = {}

    def sketch(self, text: str) -> tuple[np.ndarray, Any]:
        """``text``'s shingles and MinHash, made once for a ``match`` and then an ``add``."""
        sh = shingles(text)
        # shingles arrive hashed; reuse the permutations instead of drawing them per row
        mh = self._minhash(
            num_perm=NUM_PERM,
            seed=1,
            hashfunc=int,
            scheme=self._template.scheme,
            permutations=self._template.permutations,
        )
        mh.update_batch(sh.tolist())
        return sh, mh

    def match(self, sketch: tuple[np.ndarray, Any]) -> tuple[str, float] | None:
        """The most similar indexed key at or above the threshold, and its Jaccard."""
        sh, mh = sketch
        best: tuple[str, float] | None = None
        for key in self._lsh.query(mh):
            score = jaccard(sh, self._shingles[key])
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    def add(self, key: str, sketch: tuple[np.ndarray, Any]) -> None:
        sh, mh = sketch
        self._lsh.insert(key, mh)
        self._shingles[key] = sh
