"""BEIR datasets as training groups: (query, relevant document, hard negatives).

Each dataset is read with the retrievers' BEIR loader (:func:`load_beir`). A judged query
whose relevant documents are all missing from ``corpus.jsonl`` cannot be trained on: it is
counted, skipped and named in the run's ``report.json``, never an error. A dataset without
qrels for its split, or nothing usable at all, is a one-line error naming the file.

The groups a run trains on are written to the run directory (``train.jsonl``, texts
included) and read back on resume, so a resumed run sees the same rows in the same order
whatever the sources hold by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit.atomic import write_jsonl_atomic
from hwkit.errors import ConfigError, NotFoundError
from hwkit.log import get_logger
from hwkit.plugins.retrievers.beir import BeirData, load_beir
from hwkit.plugins.trainers.cross_encoder.config import BeirSource

log = get_logger("hwkit.train.cross_encoder")

MAX_NAMED = 20  # skipped query ids listed per dataset in report.json


@dataclass(frozen=True)
class Group:
    """One training example: a query, one relevant document and its hard negatives."""

    source: str
    query_id: str
    query: str
    positive_id: str
    positive: str
    negative_ids: tuple[str, ...]
    negatives: tuple[str, ...]

    @property
    def documents(self) -> list[str]:
        """The positive first, then the negatives: label 1 then 0s."""
        return [self.positive, *self.negatives]

    def to_row(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "query_id": self.query_id,
            "query": self.query,
            "positive_id": self.positive_id,
            "positive": self.positive,
            "negative_ids": list(self.negative_ids),
            "negatives": list(self.negatives),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Group:
        return cls(
            str(row["source"]),
            str(row["query_id"]),
            str(row["query"]),
            str(row["positive_id"]),
            str(row["positive"]),
            tuple(str(x) for x in row["negative_ids"]),
            tuple(str(x) for x in row["negatives"]),
        )


@dataclass
class Judged:
    """A dataset's usable judged queries: text and the relevant documents in the corpus."""

    source: BeirSource
    data: BeirData
    positives: dict[str, list[str]]  # query id -> relevant ids present in the corpus
    skipped: list[str] = field(default_factory=list)  # judged, but no relevant doc in corpus
    empty: list[str] = field(default_factory=list)  # judged, but the query text is empty

    @property
    def name(self) -> str:
        return self.source.path.name

    def report(self) -> dict[str, Any]:
        return {
            "path": str(self.source.path),
            "split": self.source.split,
            "judged_queries": len(self.data.qrels),
            "queries_used": len(self.positives),
            "skipped_no_relevant_document": len(self.skipped),
            "skipped_ids": self.skipped[:MAX_NAMED],
            "skipped_empty_query": len(self.empty),
            "corpus_rejects": len(self.data.rejects),
        }


def read_source(source: BeirSource) -> BeirData:
    """The corpus, queries and qrels of ``source``; one-line errors naming what is missing."""
    root = Path(source.path)
    if not root.is_dir():
        raise NotFoundError(
            f"BEIR directory {root} not found",
            hint="give a folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
        )
    qrels = root / "qrels" / f"{source.split}.tsv"
    if not qrels.is_file():
        folder = root / "qrels"
        splits = sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []
        here = f"splits here: {', '.join(splits)}" if splits else "this dataset has no qrels"
        raise NotFoundError(
            f"{qrels} not found: no qrels for split {source.split!r}",
            hint=f"{here}; set split for {root.name} or add qrels/{source.split}.tsv",
        )
    return load_beir(root, source.split)


def judged(source: BeirSource, *, seed: int, limit: int | None = None) -> Judged:
    """The split's judged queries that have a relevant document in the corpus; a seeded
    sample of ``limit`` (or ``source.max_queries``) of them, in qrels order."""
    import numpy as np

    data = read_source(source)
    in_corpus = {d.id for d in data.corpus}
    positives: dict[str, list[str]] = {}
    skipped: list[str] = []
    empty: list[str] = []
    for qid, docs in data.qrels.items():
        relevant = [d for d, score in docs.items() if score > 0]
        if not relevant:
            continue  # judged non-relevant only: not a query to learn from
        present = [d for d in relevant if d in in_corpus]
        if not present:
            skipped.append(qid)
        elif not data.queries[qid].strip():
            empty.append(qid)
        else:
            positives[qid] = present
    cap = limit if limit is not None else source.max_queries
    if cap is not None and cap < len(positives):
        ids = list(positives)
        keep = set(np.random.default_rng(seed).choice(len(ids), size=cap, replace=False).tolist())
        positives = {q: positives[q] for i, q in enumerate(ids) if i in keep}
    found = Judged(source, data, positives, skipped, empty)
    if skipped:
        log.warning(
            "queries without a relevant document in the corpus were skipped",
            dataset=str(source.path),
            split=source.split,
            skipped=len(skipped),
            first=skipped[0],
        )
    return found


def require_some(groups: Sequence[Any], sources: Sequence[Judged], what: str) -> None:
    """A one-line error when nothing usable came out of ``sources``."""
    if groups:
        return
    names = ", ".join(
        f"{j.source.path / 'qrels' / (j.source.split + '.tsv')} "
        f"({len(j.data.qrels)} judged, {len(j.skipped)} without a relevant document in "
        "corpus.jsonl)"
        for j in sources
    )
    raise ConfigError(
        f"no usable {what}: {names}",
        hint="the qrels must name documents that are in corpus.jsonl with a positive score",
    )


def write_groups(path: Path, groups: Sequence[Group]) -> None:
    write_jsonl_atomic(path, (g.to_row() for g in groups))


def read_groups(path: Path) -> list[Group]:
    """The groups an interrupted run trained on, in its order."""
    import json

    groups = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                groups.append(Group.from_row(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(
                    f"{path}:{lineno}: not a training group written by this trainer",
                    hint="resume only a run this trainer wrote, or start a new output_dir",
                ) from None
    return groups
