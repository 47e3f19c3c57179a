"""Hybrid retrieval: BM25 and dense scores fused over the union of both top-``depth`` lists.

Candidates are the union of each retriever's top ``depth`` documents; both scores are
computed exactly for every candidate (bm25s scores the whole corpus, dense is a matrix
product), so no candidate has a missing score. ``fusion="convex"`` (default) min-max
normalises each score over the candidates and mixes them with weight ``alpha`` on the
dense side; ``fusion="rrf"`` sums ``1 / (rrf_k + rank)``.

``DEFAULT_ALPHA`` = 0.5 was chosen on SciFact's *train* qrels, never on test: grid 0..1 step
0.05 with all-MiniLM-L6-v2, train nDCG@10 peaks at 0.7352 for alpha 0.50 (0.7349 at 0.55)
(``python bench/retrieval_scifact.py --index DIR --tune-only``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import Embedder
from hwkit.errors import UsageError
from hwkit.plugins.retrievers.bm25 import BM25Retriever, top_k
from hwkit.plugins.retrievers.dense import DenseRetriever
from hwkit.plugins.retrievers.documents import DocTable
from hwkit.plugins.retrievers.embedding import embedder_for_index, embedder_on
from hwkit.plugins.retrievers.fusion import convex, rrf
from hwkit.plugins.retrievers.store import Manifest, StoredRetriever
from hwkit.rejects import Reject
from hwkit.retriever import Document, Hit

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.runtime import Runtime

DEFAULT_ALPHA = 0.5
FUSIONS = ("convex", "rrf")


class HybridRetriever(StoredRetriever):
    """BM25 + dense with convex-combination (default) or reciprocal-rank fusion."""

    name = "hybrid"
    supports_add = True

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        fusion: str = "convex",
        alpha: float = DEFAULT_ALPHA,
        rrf_k: float = 60.0,
        depth: int = 100,
        bm25: dict[str, Any] | None = None,
        dense: dict[str, Any] | None = None,
        embedder_name: str = "torch",
        model: str | Path | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        if fusion not in FUSIONS:
            raise UsageError(
                f"unknown fusion {fusion!r}", hint=f"choose one of {', '.join(FUSIONS)}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha must be in [0, 1], got {alpha}")
        if depth < 1:
            raise UsageError(f"depth must be >= 1, got {depth}")
        self.fusion, self.alpha, self.rrf_k, self.depth = fusion, alpha, rrf_k, depth
        self.bm25 = BM25Retriever(**(bm25 or {}))
        self.dense = DenseRetriever(
            embedder, embedder_name=embedder_name, model=model, runtime=runtime, **(dense or {})
        )
        self.docs = DocTable()
        self.rejects: list[Reject] = []
        self._share_docs()

    @classmethod
    def conformance_instance(cls, device: Device) -> HybridRetriever:
        """For hwkit's conformance kit: the default torch embedder on the kit's device."""
        return cls(embedder_on(device))

    def _share_docs(self) -> None:
        """Both halves index the same rows in the same order."""
        self.bm25.docs = self.docs
        self.dense.docs = self.docs

    @property
    def embedder(self) -> Embedder:
        return self.dense.embedder

    def index(self, docs: Iterable[Document]) -> None:
        self._replace_docs(docs)
        self._share_docs()
        self.bm25._doc_tokens = self.bm25.tokenize(self.docs.contents())
        self.bm25._build()
        self.dense.vectors = self.dense._embed_docs(self.docs.contents())
        self.dense._build_ann()

    def add(self, docs: Iterable[Document]) -> None:
        """Add documents: only the new ones are embedded; BM25 statistics are rebuilt."""
        old_tokens = self.bm25.doc_tokens()
        start = self._append_docs(docs)
        self.bm25._doc_tokens = old_tokens + self.bm25.tokenize(self.docs.contents(start))
        self.bm25._build()
        self.dense._append_vectors(self.docs.contents(start))
        self.dense._build_ann()

    # -- search --------------------------------------------------------------------------
    def fuse(
        self,
        lexical: np.ndarray,
        qvec: np.ndarray,
        k: int,
        *,
        alpha: float | None = None,
        fusion: str | None = None,
    ) -> list[Hit]:
        """Fuse precomputed BM25 scores (all docs) with the query vector's dense scores."""
        fusion = fusion or self.fusion
        alpha = self.alpha if alpha is None else alpha
        lex_top = top_k(lexical, self.depth, positive_only=True)
        dense_rows = [r for r, _ in self.dense.search_vector(qvec, self.depth)]
        cands = np.unique(np.concatenate([lex_top, np.asarray(dense_rows, dtype=np.int64)]))
        if cands.size == 0:
            return []
        if fusion == "convex":
            dense_scores = np.asarray(self.dense.vectors[cands] @ qvec, dtype=np.float64)
            fused = convex(lexical[cands], dense_scores, alpha)
        else:
            pos = {int(c): i for i, c in enumerate(cands)}
            fused = rrf(
                [[pos[int(r)] for r in lex_top], [pos[int(r)] for r in dense_rows]],
                len(cands),
                self.rrf_k,
            )
        order = top_k(fused, k)
        return [Hit(self.docs.ids[int(cands[i])], float(fused[i])) for i in order]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        qvec = self.dense.embed_query(query)
        return self.fuse(self.bm25.scores(query), qvec, k)

    def search_batch(self, queries: list[str] | Any, k: int = 10) -> list[list[Hit]]:
        qvecs = self.embedder.embed(list(queries), kind="query")
        return [self.fuse(self.bm25.scores(q), v, k) for q, v in zip(queries, qvecs, strict=True)]

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            "fusion": self.fusion,
            "alpha": self.alpha,
            "rrf_k": self.rrf_k,
            "depth": self.depth,
            "bm25": self.bm25.options(),
            "dense": self.dense.options(),
        }

    def embedder_info(self) -> dict[str, Any]:
        return self.dense.embedder_info()

    def write_parts(self, directory: Path) -> None:
        self.bm25.write_parts(directory)
        self.dense.write_parts(directory)

    @classmethod
    def read_parts(
        cls,
        directory: Path,
        manifest: Manifest,
        docs: DocTable,
        *,
        embedder: Embedder | None = None,
        runtime: Runtime | None = None,
        **options: Any,
    ) -> HybridRetriever:
        overrides: dict[str, Any] = {
            k: options.pop(k) for k in ("fusion", "alpha", "rrf_k", "depth") if k in options
        }
        emb = embedder_for_index(manifest.embedder, directory, embedder, runtime=runtime, **options)
        retriever = cls(emb, runtime=runtime, **{**manifest.options, **overrides})
        retriever.docs = docs
        retriever._share_docs()
        bm = BM25Retriever.read_parts(
            directory, Manifest(**{**manifest.__dict__, "options": manifest.options["bm25"]}), docs
        )
        retriever.bm25 = bm
        retriever.dense.read_vectors(directory, manifest)
        retriever._share_docs()
        return retriever
