"""Dense retrieval: exact inner product over unit vectors, FAISS HNSW above a size threshold.

Exact search is one matrix-vector product (5k x 384 takes well under a millisecond), so
an approximate index only pays off for large corpora: below ``ann_threshold`` documents
search is exact, above it a FAISS ``IndexHNSWFlat`` (inner product) is built and saved.
Queries longer than the embedder's ``max_length`` tokens are truncated by the embedder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import Embedder
from hwkit.errors import ConfigError, UsageError
from hwkit.extras import require
from hwkit.log import get_logger
from hwkit.plugins.retrievers.bm25 import top_k
from hwkit.plugins.retrievers.documents import DocTable
from hwkit.plugins.retrievers.embedding import (
    embedder_for_index,
    embedder_identity,
    embedder_on,
    make_embedder,
)
from hwkit.plugins.retrievers.store import Manifest, StoredRetriever
from hwkit.rejects import Reject
from hwkit.retriever import Document, Hit

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.runtime import Runtime

log = get_logger(__name__)

VECTORS = "vectors.npy"
HNSW = "hnsw.faiss"
ANN_THRESHOLD = 100_000


class DenseRetriever(StoredRetriever):
    """Embeds documents once; a query costs one embedding and one matrix product.

    Without an ``embedder``, one is built on first use by the core (``embedder_name``,
    ``model``) on ``runtime`` (default: the process's), on the device its plan chose.
    """

    name = "dense"
    supports_add = True

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        embedder_name: str = "torch",
        model: str | Path | None = None,
        ann_threshold: int = ANN_THRESHOLD,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        batch_size: int | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self._embedder = embedder
        self.embedder_name, self.model, self.runtime = embedder_name, model, runtime
        self.ann_threshold, self.hnsw_m = ann_threshold, hnsw_m
        self.ef_construction, self.ef_search = ef_construction, ef_search
        self.batch_size = batch_size
        self.docs = DocTable()
        self.rejects: list[Reject] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self._hnsw: Any = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.embedder_name, self.model, runtime=self.runtime)
        return self._embedder

    @property
    def uses_ann(self) -> bool:
        return self._hnsw is not None

    @classmethod
    def conformance_instance(cls, device: Device) -> DenseRetriever:
        """For hwkit's conformance kit: the default torch embedder on the kit's device."""
        return cls(embedder_on(device))

    # -- indexing ------------------------------------------------------------------------
    def index(self, docs: Iterable[Document]) -> None:
        self._replace_docs(docs)
        self.vectors = self._embed_docs(self.docs.contents())
        self._build_ann()

    def add(self, docs: Iterable[Document]) -> None:
        """Embed only the new documents and append their vectors."""
        start = self._append_docs(docs)
        self._append_vectors(self.docs.contents(start))
        self._build_ann()

    def _append_vectors(self, texts: Sequence[str]) -> None:
        """Embed only ``texts`` and stack their vectors under the existing ones."""
        new = self._embed_docs(texts)
        old = np.asarray(self.vectors, dtype=np.float32)
        self.vectors = new if old.size == 0 else np.vstack([old, new])

    def _embed_docs(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.embedder.embed(list(texts), kind="document", batch_size=self.batch_size)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(texts), self.embedder.dim):
            raise UsageError(
                f"embedder returned shape {vectors.shape}, "
                f"expected {(len(texts), self.embedder.dim)}"
            )
        return vectors

    def _build_ann(self) -> None:
        if len(self.docs) < self.ann_threshold:
            self._hnsw = None
            return
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(self.vectors.shape[1], self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        self._hnsw = index
        log.info("built HNSW index", docs=len(self.docs), m=self.hnsw_m)

    # -- search --------------------------------------------------------------------------
    def embed_query(self, query: str) -> np.ndarray:
        """The query's unit vector (truncated to the embedder's max_length tokens)."""
        return self.embedder.embed([query], kind="query")[0]

    def scores(self, qvec: np.ndarray) -> np.ndarray:
        """Exact inner product of ``qvec`` with every document vector."""
        if len(self.docs) == 0:
            raise UsageError(
                "the dense retriever has no index", hint="call index() or load() first"
            )
        return np.asarray(self.vectors @ qvec, dtype=np.float32)

    def search_vector(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, score) pairs, best first: HNSW above the threshold, exact below."""
        if self._hnsw is not None:
            self._hnsw.hnsw.efSearch = max(self.ef_search, k)
            scores, rows = self._hnsw.search(qvec.reshape(1, -1).astype(np.float32), k)
            return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]
        all_scores = self.scores(qvec)
        return [(int(i), float(all_scores[i])) for i in top_k(all_scores, k)]

    def search(self, query: str, k: int = 10) -> list[Hit]:
        qvec = self.embed_query(query)
        return [Hit(self.docs.ids[r], s) for r, s in self.search_vector(qvec, k)]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        qvecs = self.embedder.embed(list(queries), kind="query")
        return [[Hit(self.docs.ids[r], s) for r, s in self.search_vector(q, k)] for q in qvecs]

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            "ann_threshold": self.ann_threshold,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
        }

    def embedder_info(self) -> dict[str, Any]:
        return embedder_identity(self.embedder)

    def write_parts(self, directory: Path) -> None:
        np.save(
            directory / VECTORS,
            np.ascontiguousarray(self.vectors, dtype=np.float32),
            allow_pickle=False,
        )
        if self._hnsw is not None:
            faiss = _faiss()
            faiss.write_index(self._hnsw, str(directory / HNSW))

    def read_vectors(self, directory: Path, manifest: Manifest) -> None:
        """Memory-map the vectors and the HNSW graph when there is one."""
        vectors = np.load(directory / VECTORS, mmap_mode="r", allow_pickle=False)
        if (
            vectors.dtype != np.float32
            or vectors.ndim != 2
            or vectors.shape[0] != manifest.doc_count
        ):
            raise ConfigError(
                f"{directory}/{VECTORS}: shape {vectors.shape} {vectors.dtype}, "
                f"expected ({manifest.doc_count}, dim) float32",
                hint="rebuild the index",
            )
        self.vectors = vectors
        if (directory / HNSW).is_file():
            faiss = _faiss()
            self._hnsw = faiss.read_index(str(directory / HNSW))

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
    ) -> DenseRetriever:
        emb = embedder_for_index(manifest.embedder, directory, embedder, runtime=runtime, **options)
        retriever = cls(emb, runtime=runtime, **manifest.options)
        retriever.docs = docs
        retriever.read_vectors(directory, manifest)
        return retriever


def _faiss() -> Any:
    """FAISS, or one line naming the extra that installs it."""
    return require("faiss", purpose="approximate dense search (HNSW)")
