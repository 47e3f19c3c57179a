"""Duplicate removal: exact (hash of the normalised text) and near (MinHash LSH on character
5-gram shingles via datasketch, each candidate confirmed by its true Jaccard similarity).

The first occurrence is kept; later ones go to rejects naming the row they duplicate.
"""

from __future__ import annotations

import hashlib

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
    datasketch = require("datasketch", purpose="dedupe = 'near'")
    MinHash, MinHashLSH = datasketch.MinHash, datasketch.MinHashLSH

    examples = exact(examples, ledger)
    # LSH at a slightly lower threshold finds the candidates; the true Jaccard decides.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=NUM_PERM)
    template = MinHash(num_perm=NUM_PERM, seed=1)
    kept: list[Example] = []
    kept_shingles: dict[str, np.ndarray] = {}
    for i, ex in enumerate(examples):
        sh = shingles(ex.dedupe_text())
        # shingles arrive hashed; reuse the permutations instead of drawing them per row
        mh = MinHash(
            num_perm=NUM_PERM,
            seed=1,
            hashfunc=int,
            scheme=template.scheme,
            permutations=template.permutations,
        )
        mh.update_batch(sh.tolist())
        best: tuple[float, str] | None = None
        for key in lsh.query(mh):
            score = jaccard(sh, kept_shingles[key])
            if score >= threshold and (best is None or score > best[0]):
                best = (score, key)
        if best is not None:
            first = examples[int(best[1])]
            _drop(
                ex,
                ledger,
                "near_duplicate",
                f"Jaccard {best[0]:.2f} >= {threshold:g} with {_where(first)}",
            )
            continue
        key = str(i)
        lsh.insert(key, mh)
        kept_shingles[key] = sh
        kept.append(ex)
    return kept
