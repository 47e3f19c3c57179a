"""The Retriever contract: index documents, search for the top k, save and load."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    (ties in any order). ``save`` writes atomically; ``load`` refuses an index written by
    a newer format version or with a checksum mismatch.
    """

    name: str

    @abstractmethod
    def index(self, docs: Iterable[Document]) -> None:
        """Build the index from scratch."""

    @abstractmethod
    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(q, k) for q in queries]

    @abstractmethod
    def __len__(self) -> int:
        """Number of indexed documents."""

    @abstractmethod
    def save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Retriever: ...
