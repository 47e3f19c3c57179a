"""Feedback records to preference pairs in trl's conversational format:
``{"prompt": [...user...], "chosen": [{"role": "assistant", ...}], "rejected": [...]}``.

Kinds (``feedback = "auto"`` picks one per row from the fields it has):
- pairs: ``chosen``/``rejected`` (plain text with a prompt column, message lists, or HH-RLHF
  transcripts);
- ab: ``response_a``/``response_b`` and ``choice`` (the picked one is chosen; a tie is rejected);
- correction: the ``corrected`` text is chosen, the original ``response`` rejected;
- thumbs: a thumbs-down answer and a thumbs-up answer to the same prompt make a pair;
- rating: answers to the same prompt whose ratings differ by at least ``min_rating_gap``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hwkit.errors import ConfigError
from hwkit.plugins.data.columns import CANDIDATES, Columns
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.example import Example, as_text, normalise
from hwkit.plugins.data.records import Ledger, RawRecord
from hwkit.plugins.data.sft import ROLE_ALIASES, RowError
from hwkit.plugins.data.transcripts import (
    Messages,
    TranscriptError,
    looks_like_transcript,
    parse_transcript,
    split_pair,
)

KINDS = ("pairs", "ab", "correction", "rating", "thumbs")
UP = {
    "up",
    "thumbs_up",
    "thumbsup",
    "+1",
    "1",
    "true",
    "yes",
    "y",
    "good",
    "like",
    "liked",
    "positive",
    "\U0001f44d",
}
DOWN = {
    "down",
    "thumbs_down",
    "thumbsdown",
    "-1",
    "0",
    "false",
    "no",
    "n",
    "bad",
    "dislike",
    "disliked",
    "negative",
    "\U0001f44e",
}
PICK_A = {"a", "response_a", "1", "first", "left"}
PICK_B = {"b", "response_b", "2", "second", "right"}
TIE = {"tie", "both", "neither", "equal", "none", "draw"}


@dataclass
class PrefPlan:
    """Columns per feedback kind; a kind is usable when all its required columns exist."""

    kinds: dict[str, dict[str, str]]
    prompt: str | None
    category: str | None
    system: str | None


REQUIRED = {
    "pairs": ("chosen", "rejected"),
    "ab": ("response_a", "response_b", "choice"),
    "correction": ("response", "corrected"),
    "rating": ("response", "rating"),
    "thumbs": ("response", "thumbs"),
}


def resolve(cfg: DataConfig, cols: Columns) -> PrefPlan:
    """Which feedback kinds the source's columns support (all of them checked up front)."""
    prompt = cols.find("prompt")
    kinds: dict[str, dict[str, str]] = {}
    wanted = KINDS if cfg.feedback == "auto" else (cfg.feedback,)
    for kind in wanted:
        found: dict[str, str] = {}
        for part in REQUIRED[kind]:
            col = cols.find(part, exclude=(prompt,))
            if col is None:
                if cfg.feedback != "auto":
                    names = "/".join(CANDIDATES[part][:4])
                    raise ConfigError(
                        f"{cols.source}: {kind} feedback needs a {part} column (looked for "
                        f"{names}); available columns: {cols.listing()}",
                        hint=f"set mapping.{part}",
                    )
                break
            found[part] = col
        else:
            kinds[kind] = found
    if not kinds:
        raise ConfigError(
            f"{cols.source}: no preference columns found; available columns: {cols.listing()}",
            hint="expected chosen/rejected, response_a/response_b/choice, response/corrected, "
            "response/rating or response/thumbs; set feedback and mapping",
        )
    if prompt is None and any(k != "pairs" for k in kinds):
        raise ConfigError(
            f"{cols.source}: feedback records need a prompt column; "
            f"available columns: {cols.listing()}",
            hint="set mapping.prompt",
        )
    return PrefPlan(kinds, prompt, cols.find("category"), cols.find("system"))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _kind_of(rec: RawRecord, plan: PrefPlan) -> str:
    for kind, parts in plan.kinds.items():
        if all(_present(rec.data.get(col)) for col in parts.values()):
            return kind
    if len(plan.kinds) == 1:  # the one kind: say which field is missing
        kind, parts = next(iter(plan.kinds.items()))
        missing = [c for c in parts.values() if not _present(rec.data.get(c))]
        reason = (
            "empty_answer"
            if any(p in ("chosen", "response", "corrected") and parts[p] in missing for p in parts)
            else "missing_field"
        )
        raise RowError(reason, f"{kind} record without {', '.join(missing)}")
    raise RowError(
        "unknown_feedback", f"the row has the fields of no feedback kind ({', '.join(plan.kinds)})"
    )


def _messages(value: Any) -> Messages:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_messages", "not a message list") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise RowError("bad_messages", "not a message list")
    out = []
    for m in value:
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from"))).lower())
        if role is None:
            raise RowError("bad_messages", f"unknown role {m.get('role')!r}")
        out.append({"role": role, "content": as_text(m.get("content", m.get("value")))})
    return out


class PairBuilder:
    """Makes Examples; the prompt and the system prompt are handled the same for every kind."""

    def __init__(self, cfg: DataConfig, plan: PrefPlan) -> None:
        self.cfg, self.plan = cfg, plan

    def prompt_of(self, rec: RawRecord) -> str:
        text = as_text(rec.data.get(self.plan.prompt)) if self.plan.prompt else ""
        if not text:
            raise RowError("empty_prompt", "the prompt is empty")
        return text

    def make(
        self, prompt: Messages, chosen: Messages, rejected: Messages, recs: list[RawRecord]
    ) -> Example:
        def text_of(msgs: Messages) -> str:
            return "\n".join(m["content"] for m in msgs)

        if not text_of(chosen).strip():
            raise RowError("empty_answer", "the chosen answer is empty")
        if text_of(chosen) == text_of(rejected):
            raise RowError("identical_pair", "chosen and rejected are the same text")
        first = recs[0].data
        system = as_text(first.get(self.plan.system)) if self.plan.system else ""
        system = system or (self.cfg.system_prompt or "")
        if system and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system}, *prompt]
        category = as_text(first.get(self.plan.category)) if self.plan.category else ""
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        prompt_text = "\n".join(m["content"] for m in prompt if m["role"] != "system")
        return Example(row, text_of(chosen), prompt_text, category or None, recs)

    def single(self, rec: RawRecord, kind: str) -> Example:
        """pairs, ab and correction: one row, one pair."""
        cols = self.plan.kinds[kind]
        d = rec.data
        if kind == "pairs":
            return self._pair(rec, d[cols["chosen"]], d[cols["rejected"]])
        user = [{"role": "user", "content": self.prompt_of(rec)}]
        if kind == "ab":
            pick = as_text(d[cols["choice"]]).lower()
            a, b = as_text(d[cols["response_a"]]), as_text(d[cols["response_b"]])
            if pick in TIE:
                raise RowError("tie", f"choice {pick!r}: a tie makes no pair")
            if pick in PICK_A:
                return self.make(user, _answer(a), _answer(b), [rec])
            if pick in PICK_B:
                return self.make(user, _answer(b), _answer(a), [rec])
            raise RowError("bad_label", f"choice {pick!r} is not a or b")
        corrected, original = as_text(d[cols["corrected"]]), as_text(d[cols["response"]])
        return self.make(user, _answer(corrected), _answer(original), [rec])

    def _pair(self, rec: RawRecord, chosen: Any, rejected: Any) -> Example:
        if looks_like_transcript(chosen) and looks_like_transcript(rejected):
            try:
                prompt, c, r = split_pair(parse_transcript(chosen), parse_transcript(rejected))
            except TranscriptError as exc:
                raise RowError("bad_transcript", str(exc)) from None
            return self.make(prompt, c, r, [rec])
        if (
            isinstance(chosen, list | str)
            and isinstance(rejected, list | str)
            and (isinstance(chosen, list) or chosen.lstrip().startswith("["))
        ):
            cm, rm = _messages(chosen), _messages(rejected)
            if self.plan.prompt and _present(rec.data.get(self.plan.prompt)):
                user = [{"role": "user", "content": self.prompt_of(rec)}]
                return self.make(user, cm, rm, [rec])
            try:
                prompt, c, r = split_pair(cm, rm)
            except TranscriptError as exc:
                raise RowError("bad_messages", str(exc)) from None
            return self.make(prompt, c, r, [rec])
        user = [{"role": "user", "content": self.prompt_of(rec)}]
        return self.make(user, _answer(as_text(chosen)), _answer(as_text(rejected)), [rec])


def _answer(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def _thumb(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = as_text(value).lower()
    if text in UP:
        return True
    if text in DOWN:
        return False
    raise RowError("bad_label", f"thumbs value {value!r} is neither up nor down")


def _rating(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RowError("bad_label", f"rating {value!r} is not a number") from None


def build_all(
    records: list[RawRecord], plan: PrefPlan, cfg: DataConfig, ledger: Ledger
) -> list[Example]:
    """All pairs, in input order; grouped kinds pair rows that share a prompt."""
    builder = PairBuilder(cfg, plan)
    out: list[Example] = []
    groups: dict[str, dict[str, list[tuple[RawRecord, str, Any]]]] = {
        "thumbs": defaultdict(list),
        "rating": defaultdict(list),
    }
    for rec in records:
        try:
            kind = _kind_of(rec, plan)
            if kind in ("thumbs", "rating"):
                cols = plan.kinds[kind]
                prompt = builder.prompt_of(rec)
                answer = as_text(rec.data[cols["response"]])
                label: Any = (
                    _thumb(rec.data[cols["thumbs"]])
                    if kind == "thumbs"
                    else _rating(rec.data[cols["rating"]])
                )
                groups[kind][normalise(prompt)].append((rec, answer, label))
                continue
            out.append(builder.single(rec, kind))
        except RowError as exc:
            ledger.note(rec, exc.reason, exc.detail)
    for key, rows in groups["thumbs"].items():
        ups = [r for r in rows if r[2]]
        downs = [r for r in rows if not r[2]]
        out.extend(_pairs_in_group(builder, ups, downs, ledger))
        if not ups or not downs:
            for rec, _, _ in rows:
                ledger.note(
                    rec,
                    "unpaired",
                    "no thumbs-"
                    + ("down" if not downs else "up")
                    + f" answer to the same prompt ({key[:60]!r})",
                )
    gap = cfg.min_rating_gap
    for rows in groups["rating"].values():
        rows = sorted(rows, key=lambda r: -r[2])
        for i, hi in enumerate(rows):
            lows = [lo for lo in rows[i + 1 :] if hi[2] - lo[2] >= gap]
            out.extend(_pairs_in_group(builder, [hi], lows, ledger))
        for rec, _, rating in rows:
            ledger.note(
                rec,
                "unpaired",
                f"no answer to the same prompt rated {gap:g} or more away from {rating:g}",
            )
    return out


def _pairs_in_group(
    builder: PairBuilder,
    good: list[tuple[RawRecord, str, Any]],
    bad: list[tuple[RawRecord, str, Any]],
    ledger: Ledger,
) -> list[Example]:
    out = []
    for g_rec, g_text, _ in good:
        user = [{"role": "user", "content": builder.prompt_of(g_rec)}]
        for b_rec, b_text, _ in bad:
            try:
                out.append(builder.make(user, _answer(g_text), _answer(b_text), [g_rec, b_rec]))
            except RowError as exc:
                ledger.note(g_rec, exc.reason, exc.detail)
                ledger.note(b_rec, exc.reason, exc.detail)
    return out
