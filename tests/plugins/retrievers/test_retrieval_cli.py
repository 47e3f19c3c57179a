"""``hwkit index build|add|info``, ``hwkit search`` and ``hwkit retrieval eval`` via CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import ConfigError, UsageError
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.runtime import set_current
from hwkit.testing import mock_runtime


@pytest.fixture(scope="module")
def corpus_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "corpus.jsonl"
    with (shared_data / "scifact" / "corpus.jsonl").open() as fh:
        lines = [line for _, line in zip(range(200), fh, strict=False)]
    lines.append(json.dumps({"_id": "blank", "title": "", "text": ""}) + "\n")
    out.write_text("".join(lines))
    return out


def test_build_search_info_add(tmp_path: Path, corpus_file: Path) -> None:
    runner = CliRunner()
    idx = tmp_path / "idx"
    res = runner.invoke(
        app, ["index", "build", str(idx), "--from", str(corpus_file), "-r", "bm25", "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["documents"] == 200 and info["rejected"] == 1
    assert json.loads((idx / "rejects.jsonl").read_text())["record"]["_id"] == "blank"

    res = runner.invoke(
        app,
        ["search", str(idx), "cerebral white matter diffusion in newborns", "-k", "3", "--json"],
    )
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout.strip().splitlines()[-1])
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0][
        "id"
    ] == "4983"  # the newborn DTI abstract
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    res = runner.invoke(app, ["index", "info", str(idx), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["documents"] == 200

    more = tmp_path / "more.jsonl"
    more.write_text(
        json.dumps({"_id": "new1", "title": "Zebrafish fin regeneration", "text": "Fins regrow."})
        + "\n"
    )
    res = runner.invoke(app, ["index", "add", str(idx), "--from", str(more)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["search", str(idx), "zebrafish fin regeneration", "-k", "1", "--json"]
    )
    assert json.loads(res.stdout.strip().splitlines()[-1])[0]["id"] == "new1"


def test_failed_build_keeps_index_and_errors_are_typed(tmp_path: Path, corpus_file: Path) -> None:
    runner = CliRunner()
    idx = tmp_path / "idx"
    assert (
        runner.invoke(
            app, ["index", "build", str(idx), "--from", str(corpus_file), "-r", "bm25"]
        ).exit_code
        == 0
    )
    before = (idx / "manifest.json").read_text()
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "1", "text": "one"}\n{"_id": "1", "text": "two"}\n')
    res = runner.invoke(app, ["index", "build", str(idx), "--from", str(dup), "-r", "bm25"])
    assert isinstance(res.exception, ConfigError) and "dup.jsonl:2: duplicate id '1'" in str(
        res.exception
    )
    assert (idx / "manifest.json").read_text() == before
    res = runner.invoke(app, ["search", str(idx), "white matter", "--json"])
    assert res.exit_code == 0
    hits = json.loads(res.stdout.strip().splitlines()[-1])
    assert hits and "white matter" in hits[0]["text"].lower()

    res = runner.invoke(
        app, ["index", "build", str(tmp_path / "x"), "--from", str(corpus_file), "-r", "rerank"]
    )
    assert isinstance(res.exception, UsageError) and "--rerank-model" in str(res.exception)


def test_retrieval_eval_on_a_beir_directory(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "scifact"
    qrels = (src / "qrels" / "test.tsv").read_text().splitlines()
    keep = qrels[:21]  # header + 20 judgments
    wanted = {line.split("\t")[1] for line in keep[1:]}
    root = tmp_path / "mini"
    (root / "qrels").mkdir(parents=True)
    (root / "qrels" / "test.tsv").write_text("\n".join(keep) + "\n")
    (root / "queries.jsonl").write_text((src / "queries.jsonl").read_text())
    with (src / "corpus.jsonl").open() as fh:
        lines = [line for line in fh]
    chosen = [line for line in lines if json.loads(line)["_id"] in wanted] + lines[:300]
    (root / "corpus.jsonl").write_text("".join(dict.fromkeys(chosen)))
    res = CliRunner().invoke(
        app, ["retrieval", "eval", "--data", str(root), "--retriever", "bm25", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["queries"] == len({line.split("\t")[0] for line in keep[1:]})
    assert 0.5 < out["metrics"]["ndcg@10"] <= 1.0 and out["latency_ms"]["p50"] > 0


def test_add_is_refused_for_a_retriever_that_does_not_support_it(
    tmp_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    idx = tmp_path / "idx"
    res = runner.invoke(app, ["index", "build", str(idx), "--from", str(corpus_file), "-r", "bm25"])
    assert res.exit_code == 0, res.output
    before = (idx / "manifest.json").read_text()
    monkeypatch.setattr(BM25Retriever, "supports_add", False)
    res = runner.invoke(app, ["index", "add", str(idx), "--from", str(corpus_file)])
    assert isinstance(res.exception, UsageError) and "cannot add documents" in str(res.exception)
    assert (idx / "manifest.json").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("profile", "device_id"),
    [("rtx5090", "cuda:0"), ("h200", "cuda:0"), ("arc-meteor-lake", "xpu:0")],
)
def test_index_build_embeds_on_the_runtimes_device(
    tmp_path: Path, corpus_file: Path, profile: str, device_id: str
) -> None:
    small = tmp_path / "corpus.jsonl"
    small.write_text("".join(corpus_file.read_text().splitlines(keepends=True)[:20]))
    set_current(mock_runtime(profile))  # the machine `hwkit` runs on (reset for each test)
    runner = CliRunner()
    idx = tmp_path / "idx"
    res = runner.invoke(
        app, ["index", "build", str(idx), "--from", str(small), "-r", "dense", "--json"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["device"] == device_id and info["documents"] == 20
    first = json.loads(small.read_text().splitlines()[3])
    res = runner.invoke(app, ["search", str(idx), first["title"], "-k", "1", "--json"])
    assert res.exit_code == 0, res.output
    (hit,) = json.loads(res.stdout.strip().splitlines()[-1])
    assert hit["id"] == first["_id"] and hit["text"].startswith(first["title"])
