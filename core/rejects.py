"""Rejected input, one record type for every reader: nothing is dropped silently.

A reject says what came in (``record``), where (``source`` and a 1-based ``line`` of a file
or ``row`` of a query result), why (``reason``: a short code or phrase) and, where it helps,
a readable ``detail``. Readers collect them; ``write_rejects`` puts them in a run's or an
index's ``rejects.jsonl`` atomically, and ``read_rejects`` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.atomic import write_jsonl_atomic

REJECTS_FILE = "rejects.jsonl"


@dataclass(frozen=True)
class Reject:
    """One input row that was not used, and why."""

    reason: str
    record: Any = None
    source: str = ""
    line: int | None = None
    row: int | None = None
    detail: str = ""

    def where(self) -> str:
        """``file:line``, ``source row N`` or the source alone, for one-line messages."""
        if self.line is not None:
            return f"{self.source}:{self.line}" if self.source else f"line {self.line}"
        if self.row is not None:
            return f"{self.source} row {self.row}".strip()
        return self.source

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.line is not None:
            out["line"] = self.line
        if self.row is not None:
            out["row"] = self.row
        out.update(reason=self.reason, detail=self.detail, record=self.record)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reject:
        return cls(
            reason=str(data.get("reason", "")),
            record=data.get("record"),
            source=str(data.get("source", "")),
            line=data.get("line"),
            row=data.get("row"),
            detail=str(data.get("detail", "")),
        )


def write_rejects(path: Path, rejects: Iterable[Reject]) -> int:
    """Write ``rejects`` to ``path`` as JSONL, atomically; returns how many were written."""
    rows = [r.to_dict() for r in rejects]
    write_jsonl_atomic(path, rows)
    return len(rows)


def read_rejects(path: Path) -> list[Reject]:
    """The rejects in a ``rejects.jsonl`` file; an absent file has none."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(Reject.from_dict(json.loads(line)))
    return out


def count_by_reason(rejects: Iterable[Reject]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in rejects:
        counts[item.reason] = counts.get(item.reason, 0) + 1
    return dict(sorted(counts.items()))
