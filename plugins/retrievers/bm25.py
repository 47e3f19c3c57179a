"""BM25 through bm25s, with Snowball stemming, English stopwords and optional RM3 expansion.

Defaults (Lucene BM25, k1=1.5, b=0.75) were picked on SciFact's *train* qrels from a
k1 x b grid (``python bench/retrieval_scifact.py --tune-bm25``); test nDCG@10 0.6863.
Documents are indexed as ``title + " " + text``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.errors import UsageError
from hwkit.extras import require
from hwkit.log import get_logger
from hwkit.plugins.retrievers.documents import DocTable
from hwkit.plugins.retrievers.store import Manifest, StoredRetriever
from hwkit.rejects import Reject
from hwkit.retriever import Document, Hit

log = get_logger(__name__)

BM25_DIR = "bm25"


def top_k(scores: np.ndarray, k: int, positive_only: bool = False) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first (argpartition, then sort the few)."""
    n = scores.shape[0]
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(k, n)
    idx = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if positive_only:
        idx = idx[scores[idx] > 0]
    return idx


class BM25Retriever(StoredRetriever):
    """Lexical retrieval; ``rm3=True`` adds RM3 pseudo-relevance-feedback query expansion."""

    name = "bm25"
    supports_add = True

    def __init__(
        self,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        language: str = "english",
        stopwords: str | None = "en",
        rm3: bool = False,
        fb_docs: int = 10,
        fb_terms: int = 10,
        original_weight: float = 0.5,
    ) -> None:
        if not 0.0 <= original_weight <= 1.0:
            raise UsageError(f"original_weight must be in [0, 1], got {original_weight}")
        self.k1, self.b, self.method = k1, b, method
        self.language, self.stopwords = language, stopwords
        self.rm3, self.fb_docs, self.fb_terms = rm3, fb_docs, fb_terms
        self.original_weight = original_weight
        self.docs = DocTable()
        self.rejects: list[Reject] = []
        self._bm25: Any = None
        self._doc_tokens: list[list[str]] | None = None
        self._stemmer: Any = None

    # -- tokenization --------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Lower-case, split, drop stopwords, stem: the same for documents and queries."""
        bm25s = _bm25s()
        if self._stemmer is None and self.language:
            stemmer = require("Stemmer", purpose="BM25 stemming (PyStemmer)")
            self._stemmer = stemmer.Stemmer(self.language)
        stem = self._stemmer.stemWords if self._stemmer is not None else None
        out = bm25s.tokenize(
            list(texts),
            stopwords=self.stopwords or [],
            stemmer=stem,
            return_ids=False,
            show_progress=False,
        )
        return [list(t) for t in out]

    # -- indexing ------------------------------------------------------------------------
    def index(self, docs: Iterable[Document]) -> None:
        self._replace_docs(docs)
        self._doc_tokens = self.tokenize(self.docs.contents())
        self._build()

    def add(self, docs: Iterable[Document]) -> None:
        """Add documents; bm25s has no incremental update, so statistics are rebuilt."""
        start = self._append_docs(docs)
        self._doc_tokens = self.doc_tokens()[:start] + self.tokenize(self.docs.contents(start))
        self._build()

    def _build(self) -> None:
        bm = _bm25s().BM25(k1=self.k1, b=self.b, method=self.method)
        bm.index(self.doc_tokens(), show_progress=False)
        self._bm25 = bm

    def doc_tokens(self) -> list[list[str]]:
        if self._doc_tokens is None:  # after load: tokenize once, only if RM3 needs it
            self._doc_tokens = self.tokenize(self.docs.contents())
        return self._doc_tokens

    # -- scoring -------------------------------------------------------------------------
    def _require_index(self) -> None:
        if self._bm25 is None:
            raise UsageError("the bm25 retriever has no index", hint="call index() or load() first")

    def term_scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for a bag of tokens (unknown tokens score 0)."""
        self._require_index()
        known = [t for t in tokens if t and t in self._bm25.vocab_dict]
        if not known:
            return np.zeros(len(self.docs), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def scores(self, query: str) -> np.ndarray:
        """Scores of all documents for ``query`` (with RM3 when enabled)."""
        tokens = self.tokenize([query])[0]
        base = self.term_scores(tokens)
        if not self.rm3 or not tokens or not base.any():
            return base
        return self._rm3_scores(tokens, base)

    def expansion(self, query: str) -> dict[str, float]:
        """RM3 term weights for ``query`` (stemmed terms), for inspection and tests."""
        tokens = self.tokenize([query])[0]
        return self._rm3_weights(tokens, self.term_scores(tokens))

    def _rm3_weights(self, tokens: list[str], base: np.ndarray) -> dict[str, float]:
        """RM3: mix the query's term distribution with a relevance model from the top docs."""
        top = top_k(base, self.fb_docs, positive_only=True)
        doc_weights = base[top] / base[top].sum() if len(top) else base[top]
        relevance: defaultdict[str, float] = defaultdict(float)
        doc_tokens = self.doc_tokens()
        for i, w in zip(top, doc_weights, strict=True):
            toks = doc_tokens[int(i)]
            if not toks:
                continue
            for term, tf in Counter(toks).items():
                relevance[term] += float(w) * tf / len(toks)
        best = sorted(relevance.items(), key=lambda kv: -kv[1])[: self.fb_terms]
        total = sum(v for _, v in best) or 1.0
        query_model = Counter(t for t in tokens if t)
        qn = sum(query_model.values()) or 1
        weights: defaultdict[str, float] = defaultdict(float)
        for term, count in query_model.items():
            weights[term] += self.original_weight * count / qn
        for term, v in best:
            weights[term] += (1.0 - self.original_weight) * v / total
        return dict(weights)

    def _rm3_scores(self, tokens: list[str], base: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.docs), dtype=np.float32)
        for term, w in self._rm3_weights(tokens, base).items():
            out += np.float32(w) * self.term_scores([term])
        return out

    def search(self, query: str, k: int = 10) -> list[Hit]:
        scores = self.scores(query)
        return [
            Hit(self.docs.ids[i], float(scores[i])) for i in top_k(scores, k, positive_only=True)
        ]

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "language": self.language,
            "stopwords": self.stopwords,
            "rm3": self.rm3,
            "fb_docs": self.fb_docs,
            "fb_terms": self.fb_terms,
            "original_weight": self.original_weight,
        }

    def write_parts(self, directory: Path) -> None:
        self._require_index()
        self._bm25.save(str(directory / BM25_DIR), show_progress=False)

    @classmethod
    def read_parts(
        cls, directory: Path, manifest: Manifest, docs: DocTable, **kwargs: Any
    ) -> BM25Retriever:
        # BM25 embeds nothing; callers may pass an embedder or a runtime for any index.
        kwargs.pop("embedder", None)
        kwargs.pop("runtime", None)
        options = {**manifest.options, **kwargs}
        retriever = cls(**options)
        retriever.docs = docs
        retriever._bm25 = _bm25s().BM25.load(
            str(directory / BM25_DIR), show_progress=False, verbosity=0
        )
        return retriever


def _bm25s() -> Any:
    """bm25s, or one line naming the extra that installs it."""
    return require("bm25s", purpose="BM25 retrieval")
