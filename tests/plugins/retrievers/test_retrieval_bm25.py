"""BM25 on the full SciFact corpus (real data, test qrels) and RM3 query expansion."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from hwkit.plugins.retrievers.beir import BeirData, evaluate_retriever, load_beir
from hwkit.plugins.retrievers.bm25 import BM25Retriever


@pytest.fixture(scope="module")
def scifact(shared_data: Path) -> BeirData:
    return load_beir(shared_data / "scifact", "test")


@pytest.fixture(scope="module")
def bm25(scifact: BeirData) -> BM25Retriever:
    r = BM25Retriever()
    r.index(scifact.corpus)
    return r


def test_bm25_reaches_published_scifact_ndcg(bm25: BM25Retriever, scifact: BeirData) -> None:
    assert len(bm25) == 5183 and not scifact.rejects
    result = evaluate_retriever(bm25, scifact.queries, scifact.qrels)
    assert result.queries == 300
    assert result.metrics["ndcg@10"] >= 0.65, result.metrics  # published BM25: 0.665
    assert result.metrics["recall@100"] >= 0.85
    assert set(result.latency_ms) == {"p50", "p95", "p99", "mean"}
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p95"] <= result.latency_ms["p99"]


def test_stemming_matches_inflected_forms(bm25: BM25Retriever) -> None:
    assert bm25.tokenize(["The proteins are regulating the cells"]) == [
        ["protein", "regul", "cell"]
    ]
    a = [h.id for h in bm25.search("regulating proteins", 10)]
    b = [h.id for h in bm25.search("regulated protein", 10)]
    assert a == b and len(a) == 10


def test_rm3_expands_with_feedback_terms(bm25: BM25Retriever) -> None:
    rm3 = BM25Retriever(rm3=True, fb_docs=5, fb_terms=8)
    rm3.docs, rm3._bm25 = bm25.docs, bm25._bm25
    query = "vitamin D deficiency and fractures"
    weights = rm3.expansion(query)
    original = set(bm25.tokenize([query])[0])
    assert original <= set(weights)
    assert set(weights) - original  # terms taken from the feedback documents
    assert abs(sum(weights.values()) - 1.0) < 1e-6
    hits = rm3.search(query, 20)
    assert len(hits) == 20 and all(a.score >= b.score for a, b in pairwise(hits))
    # the expanded query still finds the best plain-BM25 document near the top
    assert bm25.search(query, 1)[0].id in {h.id for h in hits[:5]}


def test_unknown_words_and_empty_query_give_no_hits(bm25: BM25Retriever) -> None:
    assert bm25.search("qwxzzy blorptastic", 10) == []
    assert bm25.search("", 10) == []
    assert bm25.search("the and of", 10) == []  # stopwords only
