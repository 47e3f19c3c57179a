"""Dense, hybrid, HNSW and Milvus retrieval on a real SciFact subset with all-MiniLM-L6-v2.

The subset is the documents relevant to 50 test queries plus 250 others; every text is
embedded once (a caching wrapper around the real torch embedder) and shared by the tests.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from hwkit.embedder import Embedder, TextKind
from hwkit.errors import ConfigError, UnavailableError, UsageError
from hwkit.plugins.retrievers.beir import evaluate_retriever, load_beir
from hwkit.plugins.retrievers.dense import DenseRetriever
from hwkit.plugins.retrievers.fusion import convex, min_max, rrf
from hwkit.plugins.retrievers.hybrid import HybridRetriever
from hwkit.plugins.retrievers.store import MANIFEST
from hwkit.retriever import Document


class CachingEmbedder(Embedder):
    """The real embedder, with each (kind, text) embedded once across the tests."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name, self.dim, self.max_length = inner.name, inner.dim, inner.max_length
        self.model_path = inner.model_path  # type: ignore[attr-defined]
        self.cache: dict[tuple[str, str], np.ndarray] = {}
        self.document_texts = 0  # document texts asked for, cached or not

    def embed(
        self, texts: Sequence[str], *, kind: TextKind = "document", batch_size: int | None = None
    ) -> np.ndarray:
        if kind == "document":
            self.document_texts += len(texts)
        todo = [t for t in dict.fromkeys(texts) if (kind, t) not in self.cache]
        if todo:
            for t, v in zip(
                todo, self.inner.embed(todo, kind=kind, batch_size=batch_size), strict=True
            ):
                self.cache[(kind, t)] = v
        return (
            np.stack([self.cache[(kind, t)] for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )


@pytest.fixture(scope="module")
def subset(shared_data: Path) -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]]]:
    data = load_beir(shared_data / "scifact", "test")
    qids = sorted(data.qrels)[:50]
    qrels = {q: data.qrels[q] for q in qids}
    relevant = {d for q in qids for d in qrels[q]}
    others = [d for d in data.corpus if d.id not in relevant]
    random.Random(0).shuffle(others)
    docs = [d for d in data.corpus if d.id in relevant] + others[:250]
    return docs, {q: data.queries[q] for q in qids}, qrels


@pytest.fixture(scope="module")
def embedder() -> CachingEmbedder:
    from hwkit.jobs import load_embedder

    return CachingEmbedder(load_embedder("torch", max_length=128, show_progress=False))


@pytest.fixture(scope="module")
def hybrid(subset: tuple, embedder: CachingEmbedder) -> HybridRetriever:
    r = HybridRetriever(embedder)
    r.index(subset[0])
    return r


def _ndcg(retriever: object, subset: tuple) -> float:
    _, queries, qrels = subset
    return evaluate_retriever(retriever, queries, qrels, warmup=0).metrics["ndcg@10"]  # type: ignore[arg-type]


def test_hybrid_beats_bm25_and_dense_alone(hybrid: HybridRetriever, subset: tuple) -> None:
    bm25 = _ndcg(hybrid.bm25, subset)
    dense = _ndcg(hybrid.dense, subset)
    fused = _ndcg(hybrid, subset)
    assert dense > 0.5 and bm25 > 0.5  # both halves work on their own
    assert fused >= max(bm25, dense), (bm25, dense, fused)
    hybrid.fusion = "rrf"
    try:
        assert _ndcg(hybrid, subset) >= min(bm25, dense)
    finally:
        hybrid.fusion = "convex"


def test_alpha_extremes_reproduce_each_side(hybrid: HybridRetriever, subset: tuple) -> None:
    for text in list(subset[1].values())[:10]:
        lexical = hybrid.bm25.scores(text)
        qvec = hybrid.dense.embed_query(text)
        dense_ids = [h.id for h in hybrid.dense.search(text, 10)]
        assert [h.id for h in hybrid.fuse(lexical, qvec, 10, alpha=1.0)] == dense_ids
        bm25_hits = hybrid.bm25.search(text, 10)
        scores = [h.score for h in bm25_hits]
        if len(set(scores)) == len(scores):  # ties may order either way
            assert [h.id for h in hybrid.fuse(lexical, qvec, 10, alpha=0.0)] == [
                h.id for h in bm25_hits
            ]


def test_fusion_functions() -> None:
    assert np.allclose(min_max(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    assert np.allclose(min_max(np.array([5.0, 5.0])), [0.0, 0.0])
    assert np.allclose(convex(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.25), [0.75, 0.25])
    fused = rrf([[0, 1, 2], [2, 0]], 3, k=60)
    assert np.allclose(fused, [1 / 61 + 1 / 62, 1 / 62, 1 / 63 + 1 / 61])
    with pytest.raises(ValueError):
        convex(np.zeros(2), np.zeros(2), 1.5)


def test_hybrid_round_trip_and_model_check(
    tmp_path: Path, hybrid: HybridRetriever, subset: tuple, embedder: CachingEmbedder
) -> None:
    hybrid.save(tmp_path / "idx")
    loaded = HybridRetriever.load(tmp_path / "idx", embedder=embedder)
    for text in list(subset[1].values())[:5]:
        a, b = hybrid.search(text, 10), loaded.search(text, 10)
        assert [h.id for h in a] == [h.id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
    mpath = tmp_path / "idx" / MANIFEST
    manifest = json.loads(mpath.read_text())
    assert manifest["embedder"]["dim"] == 384 and manifest["options"]["fusion"] == "convex"
    manifest["embedder"]["fingerprint"] = "0" * 64  # as if built with another model
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="model differs"):
        HybridRetriever.load(tmp_path / "idx", embedder=embedder)


def test_an_index_from_an_older_hwkit_loads_with_its_dimension_checked(
    tmp_path: Path, subset: tuple, embedder: CachingEmbedder
) -> None:
    """Fingerprints written before hwkit.hashing (no fingerprint_scheme) cannot be compared."""
    from structlog.testing import capture_logs

    dense = DenseRetriever(embedder)
    dense.index(subset[0][:10])
    dense.save(tmp_path / "idx")
    mpath = tmp_path / "idx" / MANIFEST
    manifest = json.loads(mpath.read_text())
    assert manifest["embedder"]["fingerprint_scheme"] == 2
    del manifest["embedder"]["fingerprint_scheme"]
    manifest["embedder"]["fingerprint"] = "f" * 64  # the old hash of the same files
    mpath.write_text(json.dumps(manifest))
    with capture_logs() as logs:
        loaded = DenseRetriever.load(tmp_path / "idx", embedder=embedder)
    assert len(loaded) == 10 and loaded.search(subset[0][4].title, 1)[0].id == subset[0][4].id
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "index model fingerprint not checked"
    ]
    manifest["embedder"]["dim"] = 768
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="dimension 768"):
        DenseRetriever.load(tmp_path / "idx", embedder=embedder)


def test_long_query_is_truncated_not_refused(hybrid: HybridRetriever) -> None:
    long_query = " ".join(["stem cells regenerate damaged cardiac tissue"] * 600)  # ~3,600 words
    hits = hybrid.search(long_query, 10)
    assert len(hits) == 10
    assert all(a.score >= b.score for a, b in pairwise(hits))


def test_hnsw_above_threshold_matches_exact(
    tmp_path: Path, subset: tuple, embedder: CachingEmbedder, hybrid: HybridRetriever
) -> None:
    ann = DenseRetriever(embedder, ann_threshold=1)
    ann.index(subset[0])
    assert ann.uses_ann and not hybrid.dense.uses_ann
    overlap = []
    for text in subset[1].values():
        exact = {h.id for h in hybrid.dense.search(text, 10)}
        overlap.append(len(exact & {h.id for h in ann.search(text, 10)}) / 10)
    assert np.mean(overlap) >= 0.95
    ann.save(tmp_path / "ann")
    assert (tmp_path / "ann" / "hnsw.faiss").is_file()
    again = DenseRetriever.load(tmp_path / "ann", embedder=embedder)
    text = next(iter(subset[1].values()))
    assert again.uses_ann and [h.id for h in again.search(text, 10)] == [
        h.id for h in ann.search(text, 10)
    ]


def test_milvus_lite_matches_exact_dense(
    tmp_path: Path, subset: tuple, embedder: CachingEmbedder, hybrid: HybridRetriever
) -> None:
    pytest.importorskip("pymilvus", reason="pymilvus not installed (pip install 'hwkit[milvus]')")
    pytest.importorskip(
        "milvus_lite", reason="milvus-lite not installed (pip install 'hwkit[milvus]')"
    )
    from hwkit.plugins.retrievers.milvus_store import MilvusRetriever

    docs = subset[0]
    store = MilvusRetriever(embedder, uri=str(tmp_path / "milvus.db"), collection="scifact")
    store.index(docs[:-5])
    store.add(docs[-5:])
    assert store.count() == len(docs)
    queries = list(subset[1].values())[:10]
    for text in queries:
        exact = [h.id for h in hybrid.dense.search(text, 10)]
        assert [h.id for h in store.search(text, 10)] == exact
    store.save(tmp_path / "idx")
    loaded = MilvusRetriever.load(tmp_path / "idx", embedder=embedder)
    assert [h.id for h in loaded.search(queries[0], 5)] == [
        h.id for h in store.search(queries[0], 5)
    ]


def test_milvus_lite_without_a_uri_writes_under_the_cache_root(
    tmp_path: Path, subset: tuple, embedder: CachingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pymilvus", reason="pymilvus not installed (pip install 'hwkit[milvus]')")
    pytest.importorskip(
        "milvus_lite", reason="milvus-lite not installed (pip install 'hwkit[milvus]')"
    )
    from hwkit.plugins.retrievers.milvus_store import URI_ENV, MilvusRetriever

    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HWKIT_CACHE_DIR", str(cache))
    monkeypatch.delenv(URI_ENV, raising=False)
    store = MilvusRetriever(embedder, collection="no_uri")
    store.index(subset[0][:20])
    store.save(tmp_path / "idx")
    assert store.uri == str(cache / "milvus" / "milvus.db")
    assert (cache / "milvus" / "milvus.db").exists()
    assert sorted(work.iterdir()) == []  # nothing in the working directory
    loaded = MilvusRetriever.load(tmp_path / "idx", embedder=embedder)
    text = subset[0][3].title
    assert [h.id for h in loaded.search(text, 3)] == [h.id for h in store.search(text, 3)]


def test_unreachable_milvus_is_one_line_error(embedder: CachingEmbedder) -> None:
    pytest.importorskip("pymilvus", reason="pymilvus not installed (pip install 'hwkit[milvus]')")
    from hwkit.plugins.retrievers.milvus_store import MilvusRetriever

    store = MilvusRetriever(embedder, uri="http://127.0.0.1:1", timeout=2)
    with pytest.raises(
        UnavailableError, match=r"cannot reach Milvus at http://127\.0\.0\.1:1"
    ) as exc:
        store.index([Document("a", "text")])
    assert "\n" not in exc.value.one_line()


def test_dense_add_embeds_only_new_documents(
    tmp_path: Path, subset: tuple, embedder: CachingEmbedder
) -> None:
    base, extra = subset[0][:40], subset[0][40:60]
    dense = DenseRetriever(embedder)
    start = embedder.document_texts
    dense.index(base)
    assert embedder.document_texts - start == 40
    dense.save(tmp_path / "idx")

    loaded = DenseRetriever.load(tmp_path / "idx", embedder=embedder)
    assert isinstance(loaded.vectors, np.memmap)  # memory-mapped, not read into RAM
    loaded.add(extra)
    assert embedder.document_texts - start == 60  # the 40 old documents were not embedded again
    loaded.save(tmp_path / "idx")

    full = DenseRetriever.load(tmp_path / "idx", embedder=embedder)
    assert len(full) == 60 and full.docs.ids == [d.id for d in [*base, *extra]]
    vectors = np.load(tmp_path / "idx" / "vectors.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (60, embedder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert full.search(extra[3].title, 1)[0].id == extra[3].id  # new docs are findable
    assert full.search(base[5].title, 1)[0].id == base[5].id  # and old ones still are
    with pytest.raises(UsageError, match="duplicate document id"):
        full.add([extra[0]])
