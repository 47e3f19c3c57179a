"""Retrieval for a served model (``hwkit serve --rag NAME=INDEX``): the chat's last user
message is the question, the index's top ``k`` passages go into the reader's prompt, and
the reply's ``[n]`` markers become citations (passage id, title, text) in the response.

The server streams the generator's own pieces (plain top-k RAG: the reflective loop
re-generates, so it cannot stream; ``hwkit rag ask --reflect`` runs it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import UsageError
from hwkit.inference import Message
from hwkit.plugins.rag import prompts
from hwkit.plugins.rag.checks import citations
from hwkit.plugins.rag.pipeline import Citation
from hwkit.retriever import Document

if TYPE_CHECKING:
    from hwkit.retriever import Retriever
    from hwkit.runtime import Runtime


@dataclass
class RagChat:
    """An index and how many passages each answer is given."""

    index: Path
    retriever: Retriever
    k: int = 3

    @classmethod
    def open(cls, index: Path, *, k: int = 3, runtime: Runtime | None = None) -> RagChat:
        """Load the index now, so a bad one stops the server before it listens."""
        from hwkit.plugins.rag.loading import open_retriever

        retriever = open_retriever(index, runtime=runtime)
        if len(retriever) == 0:
            raise UsageError(
                f"--rag {index}: the index is empty", hint="add documents with hwkit index add"
            )
        return cls(Path(index), retriever, k)

    def prompt(self, messages: list[Message]) -> tuple[list[Message], list[Document]]:
        """The reader's messages for the chat's last user message, and its passages."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if not question.strip():
            raise UsageError("a RAG model answers the last user message; there is none")
        hits = self.retriever.search(question, k=self.k)
        passages = self.retriever.documents([h.id for h in hits])
        return prompts.answer_messages(question, passages), passages


def cited(text: str, passages: list[Document]) -> list[dict[str, Any]]:
    """The passages the reply cites as ``[n]``, as the response's ``citations`` field
    (numbers with no such passage are left out: never invented)."""
    return [
        asdict(Citation(n, passages[n - 1].id, passages[n - 1].title, passages[n - 1].text))
        for n in citations(text)
        if 1 <= n <= len(passages)
    ]
