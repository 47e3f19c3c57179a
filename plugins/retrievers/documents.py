"""Corpus input: read BEIR-style JSONL, check ids and text, and keep the rejected rows.

Every retriever indexes the same thing: ``title + " " + text``. Rows with neither are
rejected with a reason (never silently dropped) so the caller can report the count and
write them to a rejects file; duplicate ids and an empty corpus are errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hwkit.atomic import write_jsonl_atomic
from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.rejects import Reject
from hwkit.retriever import Document

NO_TEXT = "no text"


@dataclass
class DocTable:
    """The indexed documents in index order: position ``i`` is row ``i`` of the vectors."""

    ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    _rows: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, docs: Sequence[Document]) -> None:
        self.ids.extend(d.id for d in docs)
        self.titles.extend(d.title for d in docs)
        self.texts.extend(d.text for d in docs)

    def row(self, doc_id: str) -> int:
        """The position of ``doc_id`` (NotFoundError when it is not indexed)."""
        if len(self._rows) != len(self.ids):  # rows were appended since the last look-up
            self._rows = {d: i for i, d in enumerate(self.ids)}
        try:
            return self._rows[doc_id]
        except KeyError:
            raise NotFoundError(
                f"document {doc_id!r} is not in the index",
                hint="ids come from search hits of this index",
            ) from None

    def documents(self, ids: Sequence[str]) -> list[Document]:
        """The indexed documents with ``ids``, in that order."""
        rows = [self.row(doc_id) for doc_id in ids]
        return [Document(self.ids[i], self.texts[i], self.titles[i]) for i in rows]

    def content(self, i: int) -> str:
        """What is indexed and embedded for document ``i``."""
        return join_content(self.titles[i], self.texts[i])

    def contents(self, start: int = 0) -> list[str]:
        return [self.content(i) for i in range(start, len(self.ids))]

    def write_jsonl(self, path: Path) -> None:
        write_jsonl_atomic(
            path,
            (
                {"_id": i, "title": t, "text": x}
                for i, t, x in zip(self.ids, self.titles, self.texts, strict=True)
            ),
        )

    @classmethod
    def read_jsonl(cls, path: Path) -> DocTable:
        table = cls()
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                table.ids.append(row["_id"])
                table.titles.append(row.get("title", ""))
                table.texts.append(row["text"])
        return table


def join_content(title: str, text: str) -> str:
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title and text else (title or text)


def check_documents(
    docs: Iterable[Document], existing_ids: Iterable[str] = ()
) -> tuple[list[Document], list[Reject]]:
    """Split docs into those to index and those rejected for having no text.

    Raises :class:`UsageError` on a duplicate id (within ``docs`` or against
    ``existing_ids``) and when nothing is left to index.
    """
    seen = set(existing_ids)
    kept: list[Document] = []
    rejects: list[Reject] = []
    for doc in docs:
        if not isinstance(doc.id, str) or not doc.id:
            raise UsageError(
                f"document with an empty id: {doc!r}", hint="give every document an id"
            )
        if doc.id in seen:
            raise UsageError(
                f"duplicate document id {doc.id!r}", hint="document ids must be unique in an index"
            )
        seen.add(doc.id)
        if not join_content(doc.title or "", doc.text or ""):
            record = {"_id": doc.id, "title": doc.title, "text": doc.text}
            rejects.append(Reject(NO_TEXT, record, detail="neither title nor text"))
            continue
        kept.append(doc)
    if not kept:
        detail = f" ({len(rejects)} rejected for having no text)" if rejects else ""
        raise UsageError(f"empty corpus: no document to index{detail}", hint="check the input")
    return kept, rejects


def read_corpus(path: Path) -> tuple[list[Document], list[Reject]]:
    """Read a BEIR ``corpus.jsonl`` (``_id`` or ``id``, ``text``, optional ``title``).

    Malformed lines and duplicate ids are errors naming the file and line; rows with no
    text are returned as rejects.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"corpus file not found: {path}", hint="pass a BEIR corpus.jsonl")
    docs: list[Document] = []
    rejects: list[Reject] = []
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg})",
                    hint="each line must be one JSON object",
                ) from None
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                )
            doc_id = row.get("_id", row.get("id"))
            if doc_id is None or str(doc_id) == "":
                raise ConfigError(
                    f"{path}:{lineno}: field '_id' is missing", hint="give every row an id"
                )
            doc_id = str(doc_id)
            if doc_id in first_line:
                raise ConfigError(
                    f"{path}:{lineno}: duplicate id {doc_id!r} "
                    f"(first on line {first_line[doc_id]})",
                    hint="document ids must be unique",
                )
            first_line[doc_id] = lineno
            title, text = row.get("title") or "", row.get("text") or ""
            if not isinstance(title, str) or not isinstance(text, str):
                raise ConfigError(f"{path}:{lineno}: fields 'title' and 'text' must be strings")
            if not join_content(title, text):
                rejects.append(
                    Reject(NO_TEXT, row, source=str(path), line=lineno, detail="no title or text")
                )
                continue
            meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
            docs.append(Document(doc_id, text, title, meta or {}))
    if not docs:
        detail = f"; {len(rejects)} rows have no text" if rejects else ""
        raise UsageError(f"{path}: empty corpus, no document to index{detail}")
    return docs, rejects
