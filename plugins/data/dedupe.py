"""Duplicate removal: exact (hash of the normalised text) and near (MinHash LSH on character
5-gram shingles via datasketch, each candidate confirmed by its true Jaccard similarity).

The first occurrence is kept; later ones go to rejects naming the row they duplicate.
"""

from __future__ import annotations

import hashlib

from hwkit.plugins.data.example import Example, normalise
from hwkit.plugins.data.records import Ledger

SHINGLE = 5
NUM_PERM = 128


def _digest(text: str) -> str:
    return hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    norm = normalise(text)
    if len(norm) <= k:
        return {norm}
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


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
    from datasketch import MinHash, MinHashLSH

    examples = exact(examples, ledger)
    # LSH at a slightly lower threshold finds the candidates; the true Jaccard decides.
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=NUM_PERM)
    kept: list[Example] = []
    kept_shingles: dict[str, set[str]] = {}
    for i, ex in enumerate(examples):
        sh = shingles(ex.dedupe_text())
        mh = MinHash(num_perm=NUM_PERM, seed=1)
        mh.update_batch([s.encode("utf-8") for s in sh])
        best: tuple[float, str] | None = None
        for key in lsh.query(mh):
            score = jaccard(sh, kept_shingles[key])
            if score >= threshold and (best is None or score > best[0]):
                best = (score, key)
        if best is not None:
            first = examples[int(best[1])]
            _drop(ex, ledger, "near_duplicate",
                  f"Jaccard {best[0]:.2f} >= {threshold:g} with {_where(first)}")
            continue
        key = str(i)
        lsh.insert(key, mh)
        kept_shingles[key] = sh
        kept.append(ex)
    return kept
