"""``hwkit rag eval``: answers scored against gold answers and gold passages.

For a BEIR-format QA set whose ``queries.jsonl`` rows carry ``answers`` (as
``../shared/data/squad-open``): retrieval recall@1/5/20 of the gold paragraph (ranx, the
question as the query), answer exact match and token F1 (SQuAD normalisation, max over the
gold answers), citation precision (cited passages that are gold, over answers that cite),
the share of answers that cite, the share whose sentences are all supported, and latency
per question (p50/p95 of the whole loop).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import ConfigError, NotFoundError
from hwkit.plugins.rag.pipeline import RagAnswer, RagPipeline
from hwkit.plugins.rag.squad import exact_match, token_f1

RECALL_AT = (1, 5, 20)


@dataclass(frozen=True)
class QA:
    id: str
    question: str
    answers: list[str]
    gold: dict[str, int]  # gold passage ids (qrels)


def read_qa(directory: Path, split: str = "test", limit: int | None = None) -> list[QA]:
    """The split's judged questions with their gold answers, in qrels order."""
    from hwkit.plugins.retrievers.beir import read_qrels

    directory = Path(directory)
    qrels = read_qrels(directory / "qrels" / f"{split}.tsv")
    path = directory / "queries.jsonl"
    if not path.is_file():
        raise NotFoundError(f"queries file not found: {path}")
    rows: dict[str, tuple[str, list[str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid, text = str(row["_id"]), str(row["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    f"{path}:{lineno}: expected a JSON object with '_id' and 'text'"
                ) from None
            answers = row.get("answers")
            if qid in qrels and not (
                isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)
            ):
                raise ConfigError(
                    f"{path}:{lineno}: question {qid!r} has no 'answers' list of strings",
                    hint="rag eval scores answers: each judged question needs its gold answers",
                )
            rows[qid] = (text, list(answers or []))
    missing = [q for q in qrels if q not in rows]
    if missing:
        raise ConfigError(
            f"{directory}: {len(missing)} question ids in qrels/{split}.tsv are not in "
            f"queries.jsonl (first: {missing[0]!r})"
        )
    items = [QA(q, rows[q][0], rows[q][1], gold) for q, gold in qrels.items()]
    return items[:limit] if limit else items


def retrieval_recall(pipeline: RagPipeline, items: Iterable[QA]) -> dict[str, float]:
    """recall@1/5/20 of the gold passages with the question as the query."""
    from hwkit.plugins.retrievers.beir import score_run

    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for item in items:
        qrels[item.id] = item.gold
        hits = pipeline.retriever.search(item.question, k=max(RECALL_AT))
        run[item.id] = {h.id: h.score for h in hits}
    return score_run(qrels, run, [f"recall@{k}" for k in RECALL_AT])


def score_answer(answer: RagAnswer, item: QA) -> dict[str, Any]:
    cited = [c.id for c in answer.citations]
    return {
        "id": item.id,
        "em": exact_match(answer.answer, item.answers),
        "f1": token_f1(answer.answer, item.answers),
        "cited": bool(cited),
        "citation_precision": (sum(c in item.gold for c in cited) / len(cited)) if cited else None,
        "supported": answer.supported if answer.retrieved else None,
        "retrieved": answer.retrieved,
        "seconds": answer.seconds,
    }


def summarize(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over questions; citation precision over answers that cite; support rate over
    answers given passages; latency percentiles in milliseconds."""
    from hwkit.plugins.retrievers.beir import latency_summary

    n = len(scores)
    cites = [s["citation_precision"] for s in scores if s["citation_precision"] is not None]
    checked = [s["supported"] for s in scores if s["supported"] is not None]
    latency = latency_summary([s["seconds"] for s in scores])
    return {
        "questions": n,
        "em": statistics.fmean(s["em"] for s in scores) if n else 0.0,
        "f1": statistics.fmean(s["f1"] for s in scores) if n else 0.0,
        "cited_rate": statistics.fmean(float(s["cited"]) for s in scores) if n else 0.0,
        "citation_precision": statistics.fmean(cites) if cites else None,
        "supported_rate": statistics.fmean(float(x) for x in checked) if checked else None,
        "retrieved_rate": statistics.fmean(float(s["retrieved"]) for s in scores) if n else 0.0,
        "latency_ms": {"p50": round(latency["p50"], 1), "p95": round(latency["p95"], 1)},
    }


def evaluate_rag(
    pipeline: RagPipeline,
    items: list[QA],
    *,
    recall: bool = True,
    on_answer: Callable[[RagAnswer, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Ask every question, score each answer, and summarise (with retrieval recall)."""
    scores = []
    for item in items:
        answer = pipeline.ask(item.question)
        score = score_answer(answer, item)
        scores.append(score)
        if on_answer is not None:
            on_answer(answer, score)
    out = summarize(scores)
    if recall and pipeline.settings.mode != "never":
        out["retrieval"] = retrieval_recall(pipeline, items)
    return out
