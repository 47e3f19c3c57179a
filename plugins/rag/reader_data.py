"""SFT rows that teach a small model to read: question + retrieved passages -> cited answer.

For each judged question of a BEIR split whose ``queries.jsonl`` also holds gold
``answers`` (squad-open), the row is the reader's prompt (``prompts.answer_messages``) over
``k`` passages and the reply ``prompts.answer_target(first gold answer, gold position)``,
e.g. ``Denver Broncos [2]``. The passages are the retriever's top ``k`` with the gold
paragraph guaranteed among them (when retrieval missed it, it replaces the last one), moved
to a seeded random position so the reader learns to look at every passage rather than to
trust rank 1.

``k = 3`` by default, measured: the chat-templated SmolLM2 prompt plus reply over BM25's
top 3 on 500 squad-open train questions is 548 tokens on average, 919 at p99 and 1004 at
most, under the 1024-token training length; top 4 passes 1024 on 6% of the rows and top 5
on 21% (truncated from the end: the answer goes first). BM25 holds the gold paragraph in its top 3
for 85% of them, 89% in its top 5.

No "the passages do not say" rows: every question here has a gold answer and is scored by
SQuAD exact match / token F1 against it, so a refusal always scores 0. BM25's top 3 misses
the gold paragraph for ~15% of questions, exactly where a reader taught to refuse would
refuse, while a guess from the passages shown still earns partial F1 (or finds the answer
repeated in another paragraph). Refusals would trade points for a behaviour this metric
does not reward; they belong to a set that scores abstention.

The rows are trl's conversational format, which ``hwkit train sft`` reads (``[data] source``
= the file): ``{"messages": [system, user, assistant]}`` plus provenance fields that the
data pipeline ignores (``query_id``, ``gold_id``, ``passage_ids``, ``citation``,
``retrieved_gold``, ``answers``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import ConfigError, NotFoundError, UsageError

if TYPE_CHECKING:
    import typer

    from hwkit.retriever import Retriever

DEFAULT_K = 3  # see the module docstring: prompts stay under 1024 tokens
DEFAULT_SEED = 0
ANSWERS_HINT = (
    "reader data needs each question's gold answers: an 'answers' list of strings on its "
    "line of queries.jsonl, as squad-open has"
)


@dataclass(frozen=True)
class ReaderDataSummary:
    """What a build wrote: row count, and how often retrieval found the gold by itself."""

    out: str
    split: str
    rows: int
    k: int
    seed: int
    retrieved_gold: int  # rows where the gold paragraph was in the retriever's top k
    skipped_no_gold: int  # judged questions whose qrels have no positive score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_answers(path: Path, ids: Sequence[str]) -> dict[str, list[str]]:
    """Gold answers of the queries ``ids`` from a queries.jsonl with an ``answers`` field
    (``read_queries`` keeps only the text); a missing or empty list is a ConfigError."""
    wanted = set(ids)
    answers: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid = str(row.get("_id", row.get("id")))
            except (json.JSONDecodeError, AttributeError):
                raise ConfigError(f"{path}:{lineno}: expected a JSON object") from None
            if qid not in wanted:
                continue
            value = row.get("answers")
            if isinstance(value, str):
                value = [value]
            golds = (
                [a for a in value if isinstance(a, str) and a.strip()]
                if isinstance(value, list)
                else []
            )
            if golds:
                answers[qid] = golds
    missing = [q for q in ids if q not in answers]
    if missing:
        raise ConfigError(
            f"{path}: {len(missing)} of {len(ids)} questions have no 'answers' "
            f"(first: {missing[0]!r})",
            hint=ANSWERS_HINT,
        )
    return answers


def _gold_ids(judged: dict[str, int]) -> list[str]:
    """Positive qrels, best score first (ties in qrels order)."""
    ranked = sorted(judged.items(), key=lambda item: -item[1])
    return [doc_id for doc_id, score in ranked if score > 0]


def _place_gold(
    retrieved: list[str], golds: list[str], k: int, rng: random.Random
) -> tuple[list[str], str]:
    """The top ``k`` ids with a gold one among them (the best-ranked retrieved gold, else
    the best-scored gold in place of the last), that gold moved to a random position; and
    which gold it is (the one the target cites)."""
    shown = retrieved[:k]
    gold = next((d for d in shown if d in golds), None)
    if gold is None:
        gold = golds[0]
        shown = shown[: k - 1]  # the last place, or a free one when there were fewer hits
    others = [d for d in shown if d != gold]
    others.insert(rng.randrange(len(others) + 1), gold)
    return others, gold


def reader_rows(
    data_dir: Path,
    retriever: Retriever,
    *,
    split: str = "train",
    limit: int | None = None,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
) -> tuple[list[dict[str, Any]], ReaderDataSummary]:
    """The SFT rows for ``split`` of a BEIR directory, searched with ``retriever``.

    ``limit`` takes that many questions from the split shuffled with ``seed`` (so a subset
    spans the split's articles, not the first few); each question's gold position comes
    from its own ``seed``-and-id generator, so a row does not depend on ``limit``.
    """
    from hwkit.plugins.rag.prompts import answer_messages, answer_target
    from hwkit.plugins.retrievers.beir import read_qrels, read_queries

    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotFoundError(f"BEIR directory not found: {data_dir}")
    qrels = read_qrels(data_dir / "qrels" / f"{split}.tsv")
    queries = read_queries(data_dir / "queries.jsonl")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ConfigError(
            f"{data_dir}: {len(missing)} query ids in qrels/{split}.tsv are not in "
            f"queries.jsonl (first: {missing[0]!r})"
        )
    order = list(qrels)
    random.Random(seed).shuffle(order)
    golds = {q: _gold_ids(qrels[q]) for q in order}
    chosen = [q for q in order if golds[q]]
    skipped = len(order) - len(chosen)
    if limit is not None:
        chosen = chosen[:limit]
    answers = read_answers(data_dir / "queries.jsonl", chosen)

    hits = retriever.search_batch([queries[q] for q in chosen], k=k)
    rows: list[dict[str, Any]] = []
    found = 0
    for qid, qhits in zip(chosen, hits, strict=True):
        retrieved = list(dict.fromkeys(h.id for h in qhits))
        rng = random.Random(f"{seed}/{qid}")
        shown, gold = _place_gold(retrieved, golds[qid], k, rng)
        try:
            passages = retriever.documents(shown)
        except NotFoundError:
            raise ConfigError(
                f"question {qid!r}: its gold paragraph {gold!r} is not in the index",
                hint=f"build the index from {data_dir / 'corpus.jsonl'}",
            ) from None
        citation = shown.index(gold) + 1
        in_top_k = gold in retrieved[:k]
        found += in_top_k
        messages = answer_messages(queries[qid], passages)
        messages.append({"role": "assistant", "content": answer_target(answers[qid][0], citation)})
        rows.append(
            {
                "messages": messages,
                "query_id": qid,
                "gold_id": gold,
                "passage_ids": shown,
                "citation": citation,
                "retrieved_gold": in_top_k,
                "answers": answers[qid],
            }
        )
    summary = ReaderDataSummary("", split, len(rows), k, seed, found, skipped)
    return rows, summary


def write_reader_data(
    data_dir: Path,
    index: Path,
    out: Path,
    split: str = "train",
    limit: int | None = None,
    k: int = DEFAULT_K,
    seed: int = DEFAULT_SEED,
) -> ReaderDataSummary:
    """``hwkit rag reader-data``: rows from the index at ``index`` (any hwkit index,
    opened by its manifest) written atomically to ``out`` as JSONL."""
    from hwkit.atomic import write_jsonl_atomic
    from hwkit.plugins.retrievers.store import is_index_dir, open_index

    if not is_index_dir(Path(index)):
        raise NotFoundError(
            f"no hwkit index at {index}",
            hint="build one: hwkit index build DIR --from DATA_DIR/corpus.jsonl -r bm25",
        )
    rows, summary = reader_rows(
        Path(data_dir), open_index(Path(index)), split=split, limit=limit, k=k, seed=seed
    )
    write_jsonl_atomic(Path(out), rows)
    return replace(summary, out=str(out))


def register_reader_data(app: typer.Typer) -> None:
    """Add ``reader-data`` to ``app`` (the ``hwkit rag`` group)."""
    import typer

    @app.command("reader-data")
    def reader_data(
        data_dir: Path = typer.Argument(
            ..., help="BEIR directory whose queries.jsonl has 'answers' (e.g. squad-open)."
        ),
        index: Path = typer.Option(..., "--index", help="hwkit index of its corpus."),
        out: Path = typer.Option(..., "--out", help="JSONL file of SFT rows to write."),
        split: str = typer.Option("train", "--split", help="qrels split (qrels/<split>.tsv)."),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="At most N questions (a seeded sample)."
        ),
        k: int = typer.Option(DEFAULT_K, "--k", min=1, help="Passages per prompt."),
        seed: int = typer.Option(DEFAULT_SEED, "--seed", help="Sample and gold-position seed."),
    ) -> None:
        """Write SFT rows for a reader: question + top-k passages -> cited short answer."""
        s = write_reader_data(data_dir, index, out, split=split, limit=limit, k=k, seed=seed)
        typer.echo(
            f"wrote {s.rows} rows to {s.out} ({s.split}, k={s.k}, seed={s.seed}; "
            f"gold retrieved in top {s.k} for {s.retrieved_gold}, placed for the rest)"
        )
