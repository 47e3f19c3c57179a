"""Hard negatives and evaluation candidates from BM25 (:class:`BM25Retriever`, the first
stage the reranker sits behind).

A query's negatives are the top-ranked BM25 hits that are not judged relevant to it:
exactly the documents a reranker over BM25 has to push down. When BM25 finds fewer than
asked (a query sharing few terms with a small corpus), the rest are drawn at random from
the corpus with a seeded generator and counted, so every group has the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.plugins.trainers.cross_encoder.data import Group, Judged

log = get_logger("hwkit.train.cross_encoder")


class Indexes:
    """One BM25 index per corpus file, shared by mining and evaluation of the same data."""

    def __init__(self) -> None:
        self._built: dict[Path, BM25Retriever] = {}

    def get(self, judged: Judged) -> BM25Retriever:
        key = Path(judged.source.path).resolve()
        if key not in self._built:
            bm25 = BM25Retriever()
            bm25.index(judged.data.corpus)
            self._built[key] = bm25
        return self._built[key]


@dataclass
class Mined:
    groups: list[Group]
    random_fill: int  # negatives drawn at random because BM25 found too few


def mine(judged: Judged, bm25: BM25Retriever, *, negatives: int, depth: int, seed: int) -> Mined:
    """One group per (query, relevant document): the top non-relevant BM25 hits."""
    docs = bm25.docs
    rng = np.random.default_rng(seed)
    groups: list[Group] = []
    filled = 0
    for qid, positives in judged.positives.items():
        query = judged.data.queries[qid]
        relevant = {d for d, s in judged.data.qrels[qid].items() if s > 0}
        hits = bm25.search(query, k=depth + len(relevant))
        chosen = [h.id for h in hits if h.id not in relevant][:negatives]
        if len(chosen) < negatives:
            filled += negatives - len(chosen)
            chosen += _random_others(rng, docs.ids, relevant | set(chosen), negatives - len(chosen))
        if len(chosen) < negatives:
            raise ConfigError(
                f"{judged.source.path / 'corpus.jsonl'}: {len(docs)} documents, too few for "
                f"{negatives} negatives besides query {qid!r}'s relevant ones",
                hint="lower negatives in the config",
            )
        texts = tuple(docs.content(docs.row(d)) for d in chosen)
        for pos in positives:
            positive = docs.content(docs.row(pos))
            groups.append(Group(judged.name, qid, query, pos, positive, tuple(chosen), texts))
    if filled:
        log.info("negatives drawn at random", dataset=judged.name, count=filled)
    return Mined(groups, filled)


def _random_others(
    rng: np.random.Generator, ids: Sequence[str], exclude: set[str], n: int
) -> list[str]:
    """``n`` ids not in ``exclude`` (fewer only if the corpus has no more)."""
    out: list[str] = []
    for i in rng.permutation(len(ids)):
        if len(out) == n:
            break
        if ids[int(i)] not in exclude:
            out.append(ids[int(i)])
    return out


@dataclass
class Candidates:
    """BM25's top ``depth`` for each held-out query: what the reranker reorders."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    hits: dict[str, list[tuple[str, str]]]  # query id -> [(doc id, text)], BM25 order


def candidates(judged: Judged, bm25: BM25Retriever, depth: int) -> Candidates:
    """The held-out queries' BM25 candidates (queries with no hit keep an empty list)."""
    docs = bm25.docs
    hits: dict[str, list[tuple[str, str]]] = {}
    for qid in judged.positives:
        found = bm25.search(judged.data.queries[qid], k=depth)
        hits[qid] = [(h.id, docs.content(docs.row(h.id))) for h in found]
    queries = {q: judged.data.queries[q] for q in judged.positives}
    qrels = {q: judged.data.qrels[q] for q in judged.positives}
    return Candidates(queries, qrels, hits)
