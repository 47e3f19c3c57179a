"""Column auto-detection: common names from Alpaca, Q&A tables, prompt/response logs, chat sets.

An explicitly mapped column that does not exist is a ConfigError naming it and the available
ones; auto-detection that finds nothing says which mapping field to set.
"""

from __future__ import annotations

from hwkit.errors import ConfigError
from hwkit.plugins.data.config import ColumnMapping

CANDIDATES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation", "chat"),
    "system": ("system", "system_prompt"),
    "user": ("instruction", "question", "prompt", "query", "user", "input"),
    "input": ("input", "context"),
    "assistant": ("output", "answer", "response", "completion", "reply", "assistant"),
    "category": ("category", "topic", "tag", "subject", "theme"),
    "confidence": ("confidence", "conf"),
    "prompt": ("prompt", "question", "instruction", "query", "input"),
    "chosen": ("chosen",),
    "rejected": ("rejected",),
    "response": ("response", "answer", "completion", "output", "original"),
    "thumbs": ("thumbs", "thumb", "vote", "feedback", "liked"),
    "response_a": ("response_a", "answer_a", "a", "completion_a", "output_a"),
    "response_b": ("response_b", "answer_b", "b", "completion_b", "output_b"),
    "choice": ("choice", "preferred", "winner", "picked", "preference"),
    "corrected": ("corrected", "correction", "edited", "revised"),
    "rating": ("rating", "stars", "score"),
}


class Columns:
    """Resolves mapping fields against the columns a source actually has."""

    def __init__(self, available: list[str], mapping: ColumnMapping, source: str) -> None:
        self.available = available
        self.mapping = mapping
        self.source = source
        self._lower = {c.lower(): c for c in available}

    def listing(self) -> str:
        return ", ".join(self.available) or "none"

    def missing(self, column: str, field: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: column {column!r} (mapping.{field}) not found; "
            f"available columns: {self.listing()}",
            hint=f"set mapping.{field} to one of them",
        )

    def explicit(self, field: str) -> str | None:
        """The mapped column for ``field``, checked to exist; None when not mapped."""
        name = getattr(self.mapping, field)
        if name is None:
            return None
        if name not in self.available:
            raise self.missing(name, field)
        return str(name)

    def find(self, field: str, *, exclude: tuple[str | None, ...] = ()) -> str | None:
        """Mapped column, else the first common name present (case-insensitive)."""
        mapped = self.explicit(field)
        if mapped is not None:
            return mapped
        for cand in CANDIDATES[field]:
            col = self._lower.get(cand)
            if col is not None and col not in exclude:
                return col
        return None

    def require(self, field: str, what: str, *, exclude: tuple[str | None, ...] = ()) -> str:
        col = self.find(field, exclude=exclude)
        if col is None:
            names = "/".join(CANDIDATES[field][:4])
            raise ConfigError(
                f"{self.source}: no {what} column found (looked for {names}); "
                f"available columns: {self.listing()}",
                hint=f"set mapping.{field}",
            )
        return col

    def has(self, name: str) -> bool:
        return name in self.available
