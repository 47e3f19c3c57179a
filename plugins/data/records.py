"""Rows as read from a source, and rejects: every row is either kept or rejected with a reason.

A reject is the core's one record type (:class:`hwkit.rejects.Reject`): a file row is
located by its ``line``, a query or dataset row by its ``row``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hwkit.rejects import Reject, count_by_reason

LocatorKind = Literal["line", "row"]


@dataclass
class RawRecord:
    """One input row: its fields and where it came from (a file line or a result row)."""

    data: dict[str, Any]
    locator: LocatorKind
    position: int

    def where(self) -> str:
        return f"{self.locator} {self.position}"


def position(reject: Reject) -> int:
    """The reject's line or row number (rejects of one source are listed in this order)."""
    if reject.line is not None:
        return reject.line
    return reject.row or 0


@dataclass
class Rejects:
    """Collects rejects for one source."""

    source: str
    items: list[Reject] = field(default_factory=list)

    def add(
        self,
        rec: RawRecord | None,
        reason: str,
        detail: str,
        *,
        locator: LocatorKind = "row",
        position: int = 0,
        record: Any = None,
    ) -> None:
        if rec is not None:
            locator, position, record = rec.locator, rec.position, rec.data
        self.items.append(
            Reject(
                reason,
                record=record,
                source=self.source,
                line=position if locator == "line" else None,
                row=position if locator == "row" else None,
                detail=detail,
            )
        )

    def by_reason(self) -> dict[str, int]:
        return count_by_reason(self.items)


def to_json_line(obj: Any) -> str:
    """One JSON line; values SQL drivers return (Decimal, datetime) become strings."""
    return json.dumps(obj, ensure_ascii=False, default=str)


class Ledger:
    """Why each row is not (yet) in the output; settled once the examples are final.

    A feedback row can feed several pairs, so a row is rejected only if no kept example uses
    it, with the first reason noted. That keeps ``rows in = kept + rejected`` exact.
    """

    def __init__(self) -> None:
        self._reasons: dict[int, tuple[str, str]] = {}

    def note(self, rec: RawRecord, reason: str, detail: str) -> None:
        self._reasons.setdefault(id(rec), (reason, detail))

    def settle(self, records: list[RawRecord], used: set[int], rejects: Rejects) -> int:
        """Reject every unused record; returns how many rows were kept."""
        kept = 0
        for rec in records:
            if id(rec) in used:
                kept += 1
                continue
            reason, detail = self._reasons.get(
                id(rec), ("unused", "the row produced no example (please report this)")
            )
            rejects.add(rec, reason, detail)
        return kept
