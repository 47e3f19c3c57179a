"""Built-in retrievers (bm25, dense, hybrid, rerank, milvus), hwkit's on-disk index, and the
``hwkit index``, ``hwkit search`` and ``hwkit retrieval`` commands.

Importing this package is cheap: bm25s, faiss, torch and pymilvus are imported when a
retriever indexes, searches or loads, so plugin loading and ``hwkit --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import typer

    from hwkit.retriever import Retriever

__all__ = ["hwkit_register_commands", "hwkit_register_retrievers"]


@hookimpl
def hwkit_register_retrievers(register: Register[type[Retriever]]) -> None:
    from hwkit.plugins.retrievers.bm25 import BM25Retriever
    from hwkit.plugins.retrievers.dense import DenseRetriever
    from hwkit.plugins.retrievers.hybrid import HybridRetriever
    from hwkit.plugins.retrievers.milvus_store import MilvusRetriever
    from hwkit.plugins.retrievers.rerank import RerankRetriever

    for cls in (BM25Retriever, DenseRetriever, HybridRetriever, RerankRetriever, MilvusRetriever):
        register(cls)


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.retrievers.cli import register

    register(cli)
