"""hwkit's on-disk index: round trip, checksums, versions, atomic replacement, adding docs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.hashing import file_digest
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.plugins.retrievers.documents import DocTable, check_documents, read_corpus
from hwkit.plugins.retrievers.store import (
    FORMAT_VERSION,
    MANIFEST,
    REJECTS,
    open_index,
    read_manifest,
    write_index,
)
from hwkit.rejects import Reject, read_rejects
from hwkit.retriever import Document

QUERIES = [
    "diffusion tensor imaging of white matter in newborns",
    "vitamin D deficiency and bone fractures",
    "stem cells differentiate into neurons",
]


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> list[Document]:
    docs = []
    with (shared_data / "scifact" / "corpus.jsonl").open() as fh:
        for _, line in zip(range(400), fh, strict=False):
            row = json.loads(line)
            docs.append(Document(row["_id"], row["text"], row["title"]))
    return docs


def _ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def test_bm25_round_trip_same_results(tmp_path: Path, corpus: list[Document]) -> None:
    r = BM25Retriever()
    r.index(corpus)
    r.save(tmp_path / "idx")
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert len(loaded) == len(corpus)
    for q in QUERIES:
        a, b = r.search(q, 10), loaded.search(q, 10)
        assert _ids(a) == _ids(b) and len(a) > 0
        assert np.allclose([h.score for h in a], [h.score for h in b])
    m = read_manifest(tmp_path / "idx")
    assert (
        m.format_version == FORMAT_VERSION and m.retriever == "bm25" and m.doc_count == len(corpus)
    )
    assert "docs.jsonl" in m.files and any(f.startswith("bm25/") for f in m.files)
    # open_index dispatches on the manifest through the plugin registry
    assert _ids(open_index(tmp_path / "idx").search(QUERIES[0], 5)) == _ids(r.search(QUERIES[0], 5))


def test_checksum_mismatch_is_refused(tmp_path: Path, corpus: list[Document]) -> None:
    r = BM25Retriever()
    r.index(corpus[:50])
    r.save(tmp_path / "idx")
    docs = tmp_path / "idx" / "docs.jsonl"
    docs.write_text(docs.read_text().replace("a", "b", 1))
    with pytest.raises(ConfigError, match=r"checksum mismatch for docs\.jsonl") as exc:
        BM25Retriever.load(tmp_path / "idx")
    assert "\n" not in exc.value.one_line()


def test_missing_file_and_newer_version_are_refused(tmp_path: Path, corpus: list[Document]) -> None:
    r = BM25Retriever()
    r.index(corpus[:50])
    r.save(tmp_path / "idx")
    mpath = tmp_path / "idx" / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="newer than this hwkit reads"):
        BM25Retriever.load(tmp_path / "idx")
    r.save(tmp_path / "idx2")
    next((tmp_path / "idx2" / "bm25").iterdir()).unlink()
    with pytest.raises(ConfigError, match="missing"):
        BM25Retriever.load(tmp_path / "idx2")
    with pytest.raises(NotFoundError):
        BM25Retriever.load(tmp_path / "nothing-here")


def test_failed_build_keeps_previous_index(tmp_path: Path, corpus: list[Document]) -> None:
    r = BM25Retriever()
    r.index(corpus[:100])
    r.save(tmp_path / "idx")
    before = _ids(BM25Retriever.load(tmp_path / "idx").search(QUERIES[0], 10))

    def failing_writer(directory: Path) -> None:
        (directory / "vectors.npy").write_bytes(b"partial")
        raise OSError("disk full")

    table = DocTable()
    table.extend(corpus[100:200])
    with pytest.raises(OSError, match="disk full"):
        write_index(
            tmp_path / "idx", retriever="bm25", options={}, docs=table, write_parts=failing_writer
        )
    again = BM25Retriever.load(tmp_path / "idx")
    assert len(again) == 100 and _ids(again.search(QUERIES[0], 10)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temp dir left behind

    # an error in the input (duplicate id) also leaves the old index alone
    with pytest.raises(UsageError, match="duplicate document id"):
        BM25Retriever().index([*corpus[:10], corpus[0]])
    assert len(BM25Retriever.load(tmp_path / "idx")) == 100

    # a successful rebuild replaces it
    r2 = BM25Retriever()
    r2.index(corpus[100:200])
    r2.save(tmp_path / "idx")
    assert set(BM25Retriever.load(tmp_path / "idx").docs.ids) == {d.id for d in corpus[100:200]}


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path, corpus: list[Document]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = BM25Retriever()
    r.index(corpus[:20])
    with pytest.raises(UsageError, match="not an hwkit index"):
        r.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_empty_corpus_and_textless_documents(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="empty corpus"):
        BM25Retriever().index([])
    with pytest.raises(UsageError, match=r"empty corpus.*2 rejected"):
        BM25Retriever().index([Document("a", ""), Document("b", "   ", "")])
    kept, rejects = check_documents(
        [Document("a", "text"), Document("b", ""), Document("c", "", "title only")]
    )
    assert [d.id for d in kept] == ["a", "c"] and [r.record["_id"] for r in rejects] == ["b"]

    bad = tmp_path / "corpus.jsonl"
    bad.write_text(
        '{"_id": "1", "text": "one"}\n{"_id": "2", "text": ""}\n{"_id": "1", "text": "dup"}\n'
    )
    with pytest.raises(ConfigError, match=r"corpus\.jsonl:3: duplicate id '1' \(first on line 1\)"):
        read_corpus(bad)
    bad.write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": "two"\n')
    with pytest.raises(ConfigError, match=r"corpus\.jsonl:2: not valid JSON"):
        read_corpus(bad)
    bad.write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "text": ""}\n')
    docs, rejects = read_corpus(bad)
    assert [d.id for d in docs] == ["1"] and rejects[0].line == 2

    r = BM25Retriever()
    r.index([Document("x", "a document about proteins"), Document("y", "")])
    r.save(tmp_path / "idx")
    loaded = BM25Retriever.load(tmp_path / "idx")
    assert read_manifest(tmp_path / "idx").rejected == 1 and loaded.rejects[0].record["_id"] == "y"


def test_rejects_are_hwkit_rejects_with_source_and_line(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "one"}\n{"_id": "2", "title": "", "text": ""}\n')
    docs, rejects = read_corpus(corpus)
    assert [type(r) for r in rejects] == [Reject]
    assert rejects[0].where() == f"{corpus}:2" and rejects[0].reason == "no text"
    r = BM25Retriever()
    r.index(docs)
    r.rejects = list(rejects)
    r.save(tmp_path / "idx")
    (written,) = read_rejects(tmp_path / "idx" / REJECTS)  # the core reads the index's file
    assert written.record == {"_id": "2", "title": "", "text": ""} and written.line == 2
    assert written.source == str(corpus)


def test_an_index_with_old_format_rejects_still_loads(tmp_path: Path) -> None:
    """Indexes written before hwkit.rejects kept the rejected input under "row"."""
    r = BM25Retriever()
    r.index([Document("x", "a document about proteins"), Document("y", "")])
    r.save(tmp_path / "idx")
    old = {"reason": "no text", "line": 7, "row": {"_id": "y", "title": "", "text": ""}}
    rejects = tmp_path / "idx" / REJECTS
    rejects.write_text(json.dumps(old) + "\n")
    manifest_path = tmp_path / "idx" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][REJECTS] = file_digest(rejects)
    manifest_path.write_text(json.dumps(manifest))
    loaded = BM25Retriever.load(tmp_path / "idx")
    (reject,) = loaded.rejects
    assert reject.record["_id"] == "y" and reject.line == 7 and reject.row is None
    assert loaded.documents(["x"])[0].text == "a document about proteins"


def test_documents_by_id_after_add_and_load(tmp_path: Path, corpus: list[Document]) -> None:
    r = BM25Retriever()
    r.index(corpus[:30])
    r.add(corpus[30:40])
    wanted = [corpus[35].id, corpus[2].id]
    got = r.documents(wanted)
    assert [(d.id, d.title, d.text) for d in got] == [
        (corpus[35].id, corpus[35].title, corpus[35].text),
        (corpus[2].id, corpus[2].title, corpus[2].text),
    ]
    r.save(tmp_path / "idx")
    assert open_index(tmp_path / "idx").documents(wanted) == got
    with pytest.raises(NotFoundError, match="'nope' is not in the index"):
        r.documents(["nope"])


@pytest.mark.parametrize(
    ("module", "extra"), [("bm25s", "retrieval"), ("Stemmer", "retrieval"), ("ranx", "retrieval")]
)
def test_a_missing_optional_dependency_is_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, extra: str
) -> None:
    from hwkit.errors import UnavailableError
    from hwkit.plugins.retrievers.beir import score_run

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(UnavailableError) as info:
        if module == "ranx":
            score_run({"q": {"a": 1}}, {"q": {"a": 1.0}})
        else:
            BM25Retriever().index([Document("a", "proteins fold")])
    message = info.value.one_line()
    assert f"pip install 'hwkit[{extra}]'" in message and module in message
    assert "\n" not in message
