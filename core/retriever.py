"""The Retriever contract: index documents, search for the top k, give their text back,
save and load."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hwkit.errors import UsageError


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


class Retriever(ABC):
    """Search over an indexed set of documents.

    ``search`` returns at most ``k`` hits, best first, with scores that decrease
    (ties in any order). ``documents`` gives the indexed text back for hit ids, so a caller
    (``hwkit search``, a RAG pipeline) needs nothing else from the retriever. ``save``
    writes atomically; ``load`` refuses an index written by a newer format version or with
    a checksum mismatch.

    Optional features are declared as capability flags (the conformance kit reads them):
    ``supports_add`` for ``add`` (new documents without re-indexing the old ones).
    """

    name: ClassVar[str]
    supports_add: ClassVar[bool] = False

    @abstractmethod
    def index(self, docs: Iterable[Document]) -> None:
        """Build the index from scratch."""

    @abstractmethod
    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]

    @abstractmethod
    def documents(self, ids: Sequence[str]) -> list[Document]:
        """The indexed documents with these ids, in that order (NotFoundError for an id
        that is not indexed)."""

    def add(self, docs: Iterable[Document]) -> None:
        """Index more documents, keeping the ones already indexed (``supports_add``)."""
        raise UsageError(
            f"the {self.name} retriever cannot add documents", hint="rebuild the index"
        )

    @abstractmethod
    def __len__(self) -> int:
        """Number of indexed documents."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Retriever: ...
