"""A small BEIR slice of SciFact and a tiny cross-encoder trained on it, for tests that need a
real (if weak) reranker: the cross-encoder trainer's own tests and the rerank retriever's
conformance run. Training is 8 listwise steps of 12 pairs at 48 tokens (about 20 s on two
idle cores, model loading and evaluation included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A SciFact train query whose only relevant document is left out of the slice's corpus:
# the trainer must count and skip it.
ORPHAN_DOC = "ORPHAN"


def _qrels(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, _ = line.split("\t")
        out.setdefault(qid, []).append(doc)
    return out


def scifact_slice(
    scifact: Path, out: Path, *, train: int = 12, test: int = 4, others: int = 120
) -> Path:
    """``out`` as a BEIR directory: the first ``train``/``test`` judged queries of each split,
    their relevant documents plus ``others`` more, and one train query whose relevant
    document is missing from the corpus."""
    tr = dict(list(_qrels(scifact / "qrels" / "train.tsv").items())[:train])
    te = dict(list(_qrels(scifact / "qrels" / "test.tsv").items())[:test])
    needed = {d for docs in [*tr.values(), *te.values()] for d in docs}
    corpus = [json.loads(x) for x in (scifact / "corpus.jsonl").open(encoding="utf-8")]
    rest = [c for c in corpus if c["_id"] not in needed][:others]
    kept = [c for c in corpus if c["_id"] in needed] + rest
    queries = [json.loads(x) for x in (scifact / "queries.jsonl").open(encoding="utf-8")]
    orphan = next(q["_id"] for q in queries if q["_id"] not in tr and q["_id"] not in te)
    tr[orphan] = [ORPHAN_DOC]
    wanted = set(tr) | set(te)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in kept), "utf-8")
    (out / "queries.jsonl").write_text(
        "".join(json.dumps(q) + "\n" for q in queries if q["_id"] in wanted), "utf-8"
    )
    for split, judged in (("train", tr), ("test", te)):
        rows = "".join(f"{q}\t{d}\t1\n" for q, docs in judged.items() for d in docs)
        (out / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, "utf-8")
    return out


TINY: dict[str, Any] = {
    "loss": "listwise",  # orders a query's documents fastest from a handful of steps
    "learning_rate": 3e-4,
    "warmup_ratio": 0.0,
    "batch_size": 4,
    "negatives": 2,
    "max_seq_len": 48,
    "max_steps": 8,
    "epochs": 10,
    "checkpoint_every": 2,
    "eval_queries": 4,
    "eval_depth": 5,
}


def train_tiny(dataset: Path, out: Path, *, resume: bool = False, **overrides: Any) -> Any:
    """``hwkit train cross-encoder``'s path (the core's job flow) on ``dataset``; the result."""
    from hwkit.jobs import train
    from hwkit.plugins.trainers.cross_encoder import (
        BeirSource,
        CrossEncoderTrainConfig,
        CrossEncoderTrainer,
    )
    from hwkit.runtime import current

    settings = {
        **TINY,
        "data": [BeirSource(path=dataset)],
        "eval_data": BeirSource(path=dataset, split="test"),
        "output_dir": out,
        **overrides,
    }
    config = CrossEncoderTrainConfig(**settings)
    return train(CrossEncoderTrainer(), config, runtime=current(), resume=resume)
