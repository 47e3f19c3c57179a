"""Built-in retrievers (bm25, dense, hybrid, rerank, milvus) and hwkit's on-disk index.

Importing this package is cheap: bm25s, faiss, torch and pymilvus are imported when a
retriever indexes, searches or loads, so plugin loading and ``hwkit --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from hwkit.plugins.retrievers.store import StoredRetriever

__all__ = ["builtin_retrievers", "hwkit_register_retrievers"]


def builtin_retrievers() -> dict[str, type[StoredRetriever]]:
    """Name -> class of the built-in retrievers."""
    from hwkit.plugins.retrievers.bm25 import BM25Retriever
    from hwkit.plugins.retrievers.dense import DenseRetriever
    from hwkit.plugins.retrievers.hybrid import HybridRetriever
    from hwkit.plugins.retrievers.milvus_store import MilvusRetriever
    from hwkit.plugins.retrievers.rerank import RerankRetriever

    classes: list[type[StoredRetriever]] = [
        BM25Retriever,
        DenseRetriever,
        HybridRetriever,
        RerankRetriever,
        MilvusRetriever,
    ]
    return {cls.name: cls for cls in classes}


@hookimpl
def hwkit_register_retrievers(register: Any) -> None:
    for cls in builtin_retrievers().values():
        register(cls)
