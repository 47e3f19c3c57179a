"""BEIR-format data and evaluation: corpus/queries/qrels, ranx metrics, search latency.

A BEIR directory holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``
(``query-id corpus-id score`` with a header). Metrics are ranx's nDCG@10, Recall@100
and MRR@10 over the queries that have qrels in the split; latency is the wall time of
each ``search`` call, one query at a time, query embedding included.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.errors import ConfigError, NotFoundError
from hwkit.extras import require
from hwkit.plugins.retrievers.documents import read_corpus
from hwkit.rejects import Reject
from hwkit.retriever import Document, Retriever

METRICS = ("ndcg@10", "recall@100", "mrr@10")


@dataclass
class BeirData:
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    rejects: list[Reject] = field(default_factory=list)
    split: str = "test"

    def split_queries(self) -> dict[str, str]:
        """The queries judged in this split, in qrels order."""
        return {q: self.queries[q] for q in self.qrels}


def read_queries(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise NotFoundError(f"queries file not found: {path}")
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid, text = str(row.get("_id", row.get("id"))), row["text"]
            except (json.JSONDecodeError, KeyError, AttributeError):
                raise ConfigError(
                    f"{path}:{lineno}: expected a JSON object with '_id' and 'text'"
                ) from None
            if qid in out:
                raise ConfigError(f"{path}:{lineno}: duplicate query id {qid!r}")
            out[qid] = text
    return out


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        splits = sorted(p.stem for p in path.parent.glob("*.tsv")) if path.parent.is_dir() else []
        raise NotFoundError(
            f"qrels file not found: {path}", hint=f"splits here: {', '.join(splits) or 'none'}"
        )
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if lineno == 1 and parts[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise ConfigError(
                    f"{path}:{lineno}: expected 3 tab-separated fields, got {len(parts)}"
                )
            try:
                score = int(parts[2])
            except ValueError:
                raise ConfigError(
                    f"{path}:{lineno}: score {parts[2]!r} is not an integer"
                ) from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def load_beir(directory: Path, split: str = "test") -> BeirData:
    """Read a BEIR dataset; every judged query must exist in queries.jsonl."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFoundError(f"BEIR directory not found: {directory}")
    corpus, rejects = read_corpus(directory / "corpus.jsonl")
    queries = read_queries(directory / "queries.jsonl")
    qrels = read_qrels(directory / "qrels" / f"{split}.tsv")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ConfigError(
            f"{directory}: {len(missing)} query ids in qrels/{split}.tsv are not in queries.jsonl "
            f"(first: {missing[0]!r})"
        )
    return BeirData(corpus, queries, qrels, rejects, split)


@dataclass
class EvalResult:
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    queries: int
    run: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "latency_ms": self.latency_ms, "queries": self.queries}


def score_run(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """ranx metrics; a judged query with no hits counts as zero (not skipped)."""
    import warnings

    ranx = require("ranx", purpose="retrieval evaluation")
    full = {q: run.get(q) or {"__no_hit__": 0.0} for q in qrels}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = ranx.evaluate(
            ranx.Qrels(qrels), ranx.Run(full), list(metrics), make_comparable=True
        )
    if isinstance(scores, float):
        scores = {metrics[0]: scores}
    return {m: float(v) for m, v in scores.items()}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(ms.mean())}


def evaluate_retriever(
    retriever: Retriever,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    *,
    k: int = 100,
    ignore_identical_ids: bool = False,
    warmup: int = 3,
) -> EvalResult:
    """Search every judged query one at a time, timing each call, and score the run.

    ``ignore_identical_ids`` drops a hit whose document id equals the query id (BEIR's
    option for corpora such as Quora where a query is also a document).
    """
    judged = {q: queries[q] for q in qrels if q in queries}
    for text in list(judged.values())[:warmup]:  # first calls pay for lazy set-up
        retriever.search(text, k=1)
    run: dict[str, dict[str, float]] = {}
    times: list[float] = []
    extra = 1 if ignore_identical_ids else 0
    for qid, text in judged.items():
        t0 = time.perf_counter()
        hits = retriever.search(text, k=k + extra)
        times.append(time.perf_counter() - t0)
        if ignore_identical_ids:
            hits = [h for h in hits if h.id != qid]
        run[qid] = {h.id: h.score for h in hits[:k]}
    return EvalResult(score_run(qrels, run), latency_summary(times), len(judged), run)
