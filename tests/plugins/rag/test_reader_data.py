"""Reader SFT rows (``hwkit.plugins.rag.reader_data``) on a slice of squad-open: four
articles' paragraphs, 80 train questions, BM25 over the slice."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hwkit.errors import ConfigError, NotFoundError
from hwkit.plugins.rag.prompts import answer_messages
from hwkit.plugins.rag.reader_data import (
    ReaderDataSummary,
    reader_rows,
    register_reader_data,
    write_reader_data,
)
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.plugins.retrievers.documents import read_corpus
from hwkit.retriever import Document, Hit, Retriever

ARTICLES = ("a00", "a01", "a02", "a03")  # a00 is a test article: distractors only
QUESTIONS = 80


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def squad(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BEIR directory: the slice's paragraphs, queries with answers, train qrels."""
    src = shared_data / "squad-open"
    out = tmp_path_factory.mktemp("squad-slice")
    corpus = [ln for ln in _lines(src / "corpus.jsonl") if json.loads(ln)["_id"][:3] in ARTICLES]
    qrels = [
        ln for ln in _lines(src / "qrels" / "train.tsv")[1:] if ln.split("\t")[1][:3] in ARTICLES
    ][::5][:QUESTIONS]
    ids = {ln.split("\t")[0] for ln in qrels}
    queries = [ln for ln in _lines(src / "queries.jsonl") if json.loads(ln)["_id"] in ids]
    (out / "qrels").mkdir()
    (out / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (out / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (out / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n", encoding="utf-8"
    )
    return out


@pytest.fixture(scope="module")
def bm25(squad: Path) -> BM25Retriever:
    docs, _ = read_corpus(squad / "corpus.jsonl")
    retriever = BM25Retriever()
    retriever.index(docs)
    return retriever


@pytest.fixture(scope="module")
def index_dir(bm25: BM25Retriever, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index") / "bm25"
    bm25.save(path)
    return path


def _gold(squad: Path) -> dict[str, str]:
    return {
        ln.split("\t")[0]: ln.split("\t")[1] for ln in _lines(squad / "qrels" / "train.tsv")[1:]
    }


def _queries(squad: Path) -> dict[str, dict[str, object]]:
    rows = (json.loads(ln) for ln in _lines(squad / "queries.jsonl"))
    return {str(r["_id"]): r for r in rows}


def test_gold_is_shown_at_its_citation_and_the_target_cites_it(
    squad: Path, bm25: BM25Retriever
) -> None:
    rows, summary = reader_rows(squad, bm25, k=3, seed=0)
    gold, queries = _gold(squad), _queries(squad)
    assert len(rows) == summary.rows == QUESTIONS
    for row in rows:
        qid, shown, citation = row["query_id"], row["passage_ids"], row["citation"]
        query = queries[qid]
        assert len(shown) == 3 and len(set(shown)) == 3
        assert row["gold_id"] == gold[qid] == shown[citation - 1]
        assert row["messages"][:2] == answer_messages(str(query["text"]), bm25.documents(shown))
        reply = row["messages"][2]
        assert reply["role"] == "assistant"
        assert reply["content"] == f"{row['answers'][0]} [{citation}]"
        assert re.fullmatch(r".+ \[[123]\]", reply["content"])
        assert row["answers"] == query["answers"]
        gold_doc = bm25.documents([gold[qid]])[0]
        assert (
            f"[{citation}] {gold_doc.title}: {' '.join(gold_doc.text.split())[:80]}"
            in (row["messages"][1]["content"])
        )
    # the gold moves around, and BM25 alone finds it for most questions but not all
    assert {row["citation"] for row in rows} == {1, 2, 3}
    assert 0 < summary.retrieved_gold < QUESTIONS
    assert summary.retrieved_gold == sum(row["retrieved_gold"] for row in rows)


class HidesGold(Retriever):
    """BM25 with the gold paragraphs never returned by search: retrieval always misses."""

    name = "hides-gold"

    def __init__(self, inner: BM25Retriever, gold: Iterable[str]) -> None:
        self.inner, self.gold = inner, set(gold)

    def index(self, docs: Iterable[Document]) -> None:
        raise NotImplementedError

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return [h for h in self.inner.search(query, k + 1) if h.id not in self.gold][:k]

    def documents(self, ids: Sequence[str]) -> list[Document]:
        return self.inner.documents(ids)

    def __len__(self) -> int:
        return len(self.inner)

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path) -> Retriever:
        raise NotImplementedError


def test_a_missed_gold_replaces_the_last_passage(squad: Path, bm25: BM25Retriever) -> None:
    gold, queries = _gold(squad), _queries(squad)
    hiding = HidesGold(bm25, gold.values())
    rows, summary = reader_rows(squad, hiding, k=3, seed=0, limit=20)
    assert summary.retrieved_gold == 0 and len(rows) == 20
    for row in rows:
        top = [h.id for h in hiding.search(str(queries[row["query_id"]]["text"]), 3)]
        shown = list(row["passage_ids"])
        assert shown.pop(row["citation"] - 1) == gold[row["query_id"]]
        assert shown == top[:2]  # the retriever's order, its third passage dropped


def test_rows_are_deterministic_by_seed(squad: Path, index_dir: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_reader_data(squad, index_dir, a, seed=7)
    write_reader_data(squad, index_dir, b, seed=7)
    write_reader_data(squad, index_dir, c, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    rows_a = [json.loads(ln) for ln in _lines(a)]
    rows_c = [json.loads(ln) for ln in _lines(c)]
    assert {r["query_id"] for r in rows_a} == {r["query_id"] for r in rows_c}
    # --limit takes a prefix of the seeded order: the same rows, not a re-draw
    limited = tmp_path / "limited.jsonl"
    summary = write_reader_data(squad, index_dir, limited, limit=10, seed=7)
    assert summary == ReaderDataSummary(str(limited), "train", 10, 3, 7, summary.retrieved_gold, 0)
    assert _lines(limited) == _lines(a)[:10]
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


def test_rows_are_read_by_the_sft_data_pipeline(
    squad: Path, index_dir: Path, tmp_path: Path
) -> None:
    from hwkit.plugins.data import DataConfig, prepare

    out = tmp_path / "reader.jsonl"
    write_reader_data(squad, index_dir, out, limit=30)
    data = prepare(
        DataConfig(source=str(out), kind="sft", validation_fraction=0.1),
        rejects_path=tmp_path / "rejects.jsonl",
    )
    assert data.report.rows_in == data.report.rows_kept == 30
    assert len(data.train) + len(data.validation) == 30
    written = sorted(json.dumps(json.loads(ln)["messages"]) for ln in _lines(out))
    prepared = sorted(json.dumps(r["messages"]) for r in [*data.train, *data.validation])
    assert prepared == written


def test_command_writes_rows(squad: Path, index_dir: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register_reader_data(app)
    app.command("noop")(lambda: None)  # a group, as `hwkit rag` is
    out = tmp_path / "rows.jsonl"
    args = ["reader-data", str(squad), "--index", str(index_dir), "--out", str(out)]
    res = CliRunner().invoke(app, [*args, "--limit", "5", "--k", "2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 5 rows" in res.output
    rows = [json.loads(ln) for ln in _lines(out)]
    assert len(rows) == 5 and all(len(r["passage_ids"]) == 2 for r in rows)


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_split_without_qrels_is_one_line(squad: Path, bm25: BM25Retriever) -> None:
    with pytest.raises(NotFoundError) as exc:
        reader_rows(squad, bm25, split="test")
    assert "qrels/test.tsv" in _one_line(exc) and "splits here: train" in _one_line(exc)


def test_queries_without_answers_are_one_line(
    squad: Path, bm25: BM25Retriever, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    (bare / "qrels").mkdir(parents=True)
    (bare / "qrels" / "train.tsv").write_bytes((squad / "qrels" / "train.tsv").read_bytes())
    rows = [json.loads(ln) for ln in _lines(squad / "queries.jsonl")]
    rows[3]["answers"] = []  # an empty list counts as none
    for row in rows[4:]:
        del row["answers"]
    (bare / "queries.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    with pytest.raises(ConfigError) as exc:
        reader_rows(bare, bm25)
    text = _one_line(exc)
    assert f"{QUESTIONS - 3} of {QUESTIONS} questions have no 'answers'" in text
    assert "queries.jsonl" in text and exc.value.hint


def test_an_index_without_the_gold_paragraph_is_one_line(squad: Path, tmp_path: Path) -> None:
    docs, _ = read_corpus(squad / "corpus.jsonl")
    partial = BM25Retriever()
    partial.index([d for d in docs if not d.id.startswith("a01")])
    with pytest.raises(ConfigError) as exc:
        reader_rows(squad, partial)
    assert "is not in the index" in _one_line(exc)
    with pytest.raises(NotFoundError, match="no hwkit index"):
        write_reader_data(squad, tmp_path, tmp_path / "out.jsonl")
