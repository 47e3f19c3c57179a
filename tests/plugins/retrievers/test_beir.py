"""BEIR loader and evaluation helpers: formats, errors, identical-id filtering, latency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit.errors import ConfigError, NotFoundError
from hwkit.plugins.retrievers.beir import evaluate_retriever, latency_summary, load_beir, read_qrels
from hwkit.plugins.retrievers.bm25 import BM25Retriever


def _write_beir(root: Path, docs: list[dict], queries: list[dict], qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_scifact_loads_both_splits(shared_data: Path) -> None:
    test = load_beir(shared_data / "scifact", "test")
    train = load_beir(shared_data / "scifact", "train")
    assert len(test.corpus) == 5183 and len(test.queries) == 1109
    assert len(test.qrels) == 300 and sum(len(v) for v in test.qrels.values()) == 339
    assert len(train.qrels) == 809 and not set(train.qrels) & set(test.qrels)
    assert list(test.split_queries()) == list(test.qrels)


def test_bad_files_name_file_and_line(tmp_path: Path) -> None:
    root = _write_beir(
        tmp_path / "d",
        [{"_id": "d1", "text": "alpha beta"}, {"_id": "d2", "title": "", "text": ""}],
        [{"_id": "q1", "text": "alpha"}],
        "q1\td1\t1\nq1\td2\tyes\n",
    )
    with pytest.raises(ConfigError, match=r"test\.tsv:3: score 'yes' is not an integer"):
        load_beir(root)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    with pytest.raises(ConfigError, match=r"not in queries\.jsonl"):
        load_beir(root)
    with pytest.raises(NotFoundError, match="splits here: test"):
        read_qrels(root / "qrels" / "dev.tsv")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    data = load_beir(root)
    assert [d.id for d in data.corpus] == ["d1"] and [r.record["_id"] for r in data.rejects] == [
        "d2"
    ]


def test_ignore_identical_ids(tmp_path: Path) -> None:
    docs = [
        {"_id": "q1", "text": "how do I learn python programming quickly"},
        {"_id": "d2", "text": "learn python programming with small projects"},
        {"_id": "d3", "text": "gardening tips for tomatoes"},
    ]
    root = _write_beir(
        tmp_path / "d", docs, [{"_id": "q1", "text": docs[0]["text"]}], "q1\td2\t1\n"
    )
    data = load_beir(root)
    r = BM25Retriever()
    r.index(data.corpus)
    plain = evaluate_retriever(r, data.queries, data.qrels, warmup=0)
    assert next(iter(plain.run["q1"])) == "q1"  # the query finds itself first
    assert plain.metrics["mrr@10"] == pytest.approx(0.5)
    ignored = evaluate_retriever(r, data.queries, data.qrels, ignore_identical_ids=True, warmup=0)
    assert "q1" not in ignored.run["q1"] and ignored.metrics["mrr@10"] == pytest.approx(1.0)


def test_latency_summary_percentiles() -> None:
    lat = latency_summary([0.001 * i for i in range(1, 101)])
    assert lat["p50"] == pytest.approx(50.5) and lat["p99"] == pytest.approx(99.01)
    assert latency_summary([])["p50"] == 0.0
