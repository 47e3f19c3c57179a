"""An Example: one training row in trl's conversational format plus what the pipeline needs
(the answer for readiness, keys for dedupe and grouping, and the rows it came from)."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from hwkit.plugins.data.records import RawRecord

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]")


@dataclass
class Example:
    row: dict[str, Any]
    answer: str
    prompt_text: str
    category: str | None = None
    sources: list[RawRecord] = field(default_factory=list)

    def dedupe_text(self) -> str:
        """What counts as 'the same example': the prompt plus the answer(s)."""
        rejected = self.row.get("rejected")
        tail = "" if not rejected else "\x1f" + rejected[-1]["content"]
        return f"{self.prompt_text}\x1e{self.answer}{tail}"


def normalise(text: str) -> str:
    """Case, accents' composition, punctuation and whitespace do not make a row different."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def as_text(value: Any) -> str:
    """A cell as text: None is empty, structures are JSON, everything is stripped."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def word_count(text: str) -> int:
    return len(text.split())
