"""The retriever conformance kit against a minimal third-party-style retriever that does
not declare ``supports_add``: the kit runs its refusal test (the Retriever base refuses
``add`` with a UsageError) and skips the add test. The built-in retrievers, which all
support ``add``, run the kit in tests/core/testing/test_conformance.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest

from hwkit.errors import NotFoundError
from hwkit.retriever import Document, Hit, Retriever
from hwkit.testing.suite import RetrieverContract


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


class KeywordRetriever(Retriever):
    """Scores a document by how many query words it contains; no ``add``."""

    name = "keyword"

    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}

    def index(self, docs: Iterable[Document]) -> None:
        self.docs = {d.id: d for d in docs}

    def search(self, query: str, k: int = 10) -> list[Hit]:
        words = _tokens(query)
        scored = [(len(words & _tokens(d.title + " " + d.text)), d.id) for d in self.docs.values()]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: -s[0])
        return [Hit(doc_id, float(score)) for score, doc_id in ranked[:k]]

    def documents(self, ids: Sequence[str]) -> list[Document]:
        missing = [i for i in ids if i not in self.docs]
        if missing:
            raise NotFoundError(f"document {missing[0]!r} is not in the index")
        return [self.docs[i] for i in ids]

    def __len__(self) -> int:
        return len(self.docs)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        rows = [{"id": d.id, "text": d.text, "title": d.title} for d in self.docs.values()]
        (path / "docs.json").write_text(json.dumps(rows))

    @classmethod
    def load(cls, path: Path) -> KeywordRetriever:
        retriever = cls()
        rows = json.loads((path / "docs.json").read_text())
        retriever.index(Document(r["id"], r["text"], r["title"]) for r in rows)
        return retriever


class TestKeywordRetrieverConforms(RetrieverContract):
    @pytest.fixture
    def retriever_factory(self) -> Callable[[], Retriever]:
        return KeywordRetriever
