"""Dense retrieval with the vectors in Milvus, for corpora that outgrow one machine.

The same client code talks to Milvus Lite (a local ``.db`` path: pymilvus starts the
milvus-lite gRPC server in-process, used in tests), Milvus Standalone or Distributed
(``uri="http://host:19530"``) and Zilliz Cloud (an https URI and a token). Without a URI
(argument or ``HWKIT_MILVUS_URI``) the Milvus Lite file is ``milvus.db`` under the cache
root (``hwkit.paths.cache_dir("milvus")``), never the working directory. The token is
read from ``HWKIT_MILVUS_TOKEN`` when not passed and is never written to disk.

The local index directory keeps the manifest, ids and texts; Milvus keeps the vectors
under the collection name recorded in the manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.embedder import Embedder
from hwkit.errors import ConfigError, UnavailableError, UsageError
from hwkit.extras import is_available, require
from hwkit.log import get_logger
from hwkit.paths import cache_dir
from hwkit.plugins.retrievers.documents import DocTable, check_documents
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

TOKEN_ENV = "HWKIT_MILVUS_TOKEN"
URI_ENV = "HWKIT_MILVUS_URI"
ID_MAX_LENGTH = 512
INSERT_BATCH = 1000
LITE_FILE = "milvus.db"


def default_uri() -> str:
    """The Milvus Lite file hwkit uses when given no URI: under the cache root."""
    return str(cache_dir("milvus") / LITE_FILE)


class MilvusRetriever(StoredRetriever):
    """Vectors in a Milvus collection (inner product over unit vectors)."""

    name = "milvus"
    supports_add = True

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        uri: str | None = None,
        token: str | None = None,
        collection: str = "hwkit_docs",
        embedder_name: str = "torch",
        model: str | Path | None = None,
        timeout: float = 10.0,
        batch_size: int | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self._embedder = embedder
        self.embedder_name, self.model, self.runtime = embedder_name, model, runtime
        uri = uri or os.environ.get(URI_ENV) or default_uri()
        # A Milvus Lite file is recorded as an absolute path so the index loads from anywhere.
        self.uri = str(Path(uri).expanduser().resolve()) if uri.endswith(".db") else uri
        self._token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self.collection, self.timeout, self.batch_size = collection, timeout, batch_size
        self.docs = DocTable()
        self.rejects: list[Reject] = []
        self._client: Any = None

    conformance_unavailable = "pymilvus and milvus-lite are not installed (hwkit[milvus])"

    @classmethod
    def conformance_instance(cls, device: Device) -> MilvusRetriever | None:
        """For hwkit's conformance kit: Milvus Lite under the cache root, the default torch
        embedder on the kit's device; None without pymilvus and milvus-lite."""
        if not (is_available("pymilvus") and is_available("milvus_lite")):
            return None
        return cls(embedder_on(device))

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = make_embedder(self.embedder_name, self.model, runtime=self.runtime)
        return self._embedder

    @property
    def client(self) -> Any:
        """A connected MilvusClient; an unreachable server is an UnavailableError."""
        if self._client is None:
            pymilvus = require("pymilvus", purpose="the milvus retriever")
            if self.uri.endswith(".db"):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._client = pymilvus.MilvusClient(
                    uri=self.uri, token=self._token, timeout=self.timeout
                )
            except Exception as exc:
                raise UnavailableError(
                    f"cannot reach Milvus at {self.uri}: {_short(exc)}",
                    hint=f"start Milvus or pass another uri; a token goes in {TOKEN_ENV}",
                ) from None
        return self._client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise UnavailableError(f"Milvus {what} failed at {self.uri}: {_short(exc)}") from None

    # -- indexing ------------------------------------------------------------------------
    def index(self, docs: Iterable[Document]) -> None:
        kept, self.rejects = check_documents(docs)
        client = self.client
        if self._call("has_collection", client.has_collection, self.collection):
            self._call("drop_collection", client.drop_collection, self.collection)
        self._call(
            "create_collection",
            client.create_collection,
            self.collection,
            dimension=self.embedder.dim,
            id_type="string",
            max_length=ID_MAX_LENGTH,
            metric_type="IP",
        )
        self.docs = DocTable()
        self._insert(kept)

    def add(self, docs: Iterable[Document]) -> None:
        """Embed and insert only the new documents."""
        kept, rejects = check_documents(docs, existing_ids=self.docs.ids)
        self.rejects.extend(rejects)
        self._insert(kept)

    def _insert(self, docs: Sequence[Document]) -> None:
        for d in docs:
            if len(d.id.encode()) > ID_MAX_LENGTH:
                raise UsageError(f"document id {d.id[:40]!r}… is longer than {ID_MAX_LENGTH} bytes")
        start = len(self.docs)
        self.docs.extend(docs)
        vectors = self.embedder.embed(
            self.docs.contents(start), kind="document", batch_size=self.batch_size
        )
        for s in range(0, len(docs), INSERT_BATCH):
            rows = [
                {"id": d.id, "vector": v.tolist()}
                for d, v in zip(
                    docs[s : s + INSERT_BATCH], vectors[s : s + INSERT_BATCH], strict=True
                )
            ]
            self._call("insert", self.client.insert, self.collection, rows)

    # -- search --------------------------------------------------------------------------
    def search(self, query: str, k: int = 10) -> list[Hit]:
        qvec = self.embedder.embed([query], kind="query")[0]
        return self.search_vectors(qvec[None, :], k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return self.search_vectors(self.embedder.embed(list(queries), kind="query"), k)

    def search_vectors(self, qvecs: np.ndarray, k: int) -> list[list[Hit]]:
        result = self._call(
            "search",
            self.client.search,
            self.collection,
            data=[v.astype(np.float32).tolist() for v in qvecs],
            limit=k,
            search_params={"metric_type": "IP"},
        )
        return [[Hit(str(h["id"]), float(h["distance"])) for h in hits] for hits in result]

    def count(self) -> int:
        stats = self._call(
            "get_collection_stats", self.client.get_collection_stats, self.collection
        )
        return int(stats.get("row_count", 0))

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {"uri": self.uri, "collection": self.collection, "timeout": self.timeout}

    def embedder_info(self) -> dict[str, Any]:
        return embedder_identity(self.embedder)

    def write_parts(self, directory: Path) -> None:
        """Nothing local beyond docs.jsonl: the vectors live in Milvus."""

    @classmethod
    def read_parts(
        cls,
        directory: Path,
        manifest: Manifest,
        docs: DocTable,
        *,
        embedder: Embedder | None = None,
        uri: str | None = None,
        token: str | None = None,
        runtime: Runtime | None = None,
        **options: Any,
    ) -> MilvusRetriever:
        emb = embedder_for_index(manifest.embedder, directory, embedder, runtime=runtime, **options)
        opts = dict(manifest.options)
        if uri:
            opts["uri"] = uri
        retriever = cls(emb, token=token, runtime=runtime, **opts)
        retriever.docs = docs
        if not retriever._call(
            "has_collection", retriever.client.has_collection, retriever.collection
        ):
            raise ConfigError(
                f"{directory}: Milvus collection {retriever.collection!r} "
                f"not found at {retriever.uri}",
                hint="rebuild the index",
            )
        return retriever


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:200]
