"""Rows to SFT examples: ``{"messages": [system?, user, assistant]}``.

Three mappings: columns (user/assistant, Alpaca's instruction+input/output), a ``messages``
column (OpenAI role/content or ShareGPT from/value), or a template whose ``{column}``
placeholders make the user turn and whose target column(s) become a JSON answer (the
profile scorer's "Score this profile… return JSON").
"""

from __future__ import annotations

import contextlib
import json
import math
import string
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hwkit.errors import ConfigError
from hwkit.plugins.data.columns import Columns
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.example import Example, as_text
from hwkit.plugins.data.records import Ledger, RawRecord

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}


class RowError(Exception):
    """A row-level problem: the row goes to rejects with this reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class SftPlan:
    """Which columns play which part, resolved once for the whole source."""

    mode: str  # "columns" | "messages" | "template"
    user: str | None = None
    input: str | None = None
    assistant: str | None = None
    messages: str | None = None
    system: str | None = None
    category: str | None = None
    targets: list[str] | None = None
    fields: list[str] | None = None
    keep: tuple[str, ...] = ()  # source columns copied onto the row under "columns"


def template_fields(template: str) -> list[str]:
    """Placeholder names in a str.format template, in order, without repeats."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            f"template is not a valid format string: {exc}",
            hint="write literal braces as {{ and }}",
        ) from None
    names: list[str] = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ConfigError(
                f"template placeholder {{{name}}} must be a column name",
                hint="write literal braces as {{ and }}",
            )
        if name not in names:
            names.append(name)
    return names


def resolve(cfg: DataConfig, cols: Columns) -> SftPlan:
    """Check the mapping against the source's columns once, before any row is read."""
    for name in cfg.mapping.keep:
        if not cols.has(name):
            raise cols.missing(name, "keep")
    plan = _resolve(cfg, cols)
    plan.keep = tuple(cfg.mapping.keep)
    return plan


def _resolve(cfg: DataConfig, cols: Columns) -> SftPlan:
    category = cols.find("category")
    system = cols.find("system")
    if cfg.template is not None:
        fields = template_fields(cfg.template)
        for name in fields:
            if not cols.has(name):
                raise ConfigError(
                    f"{cols.source}: template placeholder {{{name}}} is not a column; "
                    f"available columns: {cols.listing()}",
                    hint="rename the placeholder or the column",
                )
        target = cfg.mapping.target or cfg.mapping.assistant
        if target is None:
            found = cols.find("assistant", exclude=tuple(fields))
            if found is None:
                raise ConfigError(
                    f"{cols.source}: a template needs the answer column(s); "
                    f"available columns: {cols.listing()}",
                    hint='set mapping.target = "score" or ["score", "reasons"]',
                )
            target = found
        targets = [target] if isinstance(target, str) else list(target)
        for name in targets:
            if not cols.has(name):
                raise cols.missing(name, "target")
        return SftPlan("template", targets=targets, fields=fields, category=category, system=system)
    messages = cols.explicit("messages")
    if messages is None and cfg.mapping.user is None and cfg.mapping.assistant is None:
        messages = cols.find("messages")
    if messages is not None:
        return SftPlan("messages", messages=messages, category=category, system=system)
    if cols.find("chosen") and cols.find("rejected"):
        raise ConfigError(
            f"{cols.source}: the rows have chosen/rejected columns but kind is sft; "
            f"available columns: {cols.listing()}",
            hint='set kind = "preference"',
        )
    user = cols.require("user", "user/instruction")
    assistant = cols.require("assistant", "assistant/answer", exclude=(user,))
    inp = cols.explicit("input")
    if inp is None and user.lower() == "instruction":
        inp = cols.find("input", exclude=(user, assistant))
    return SftPlan(
        "columns", user=user, input=inp, assistant=assistant, category=category, system=system
    )


def _render_target(rec: dict[str, Any], targets: list[str]) -> str:
    if len(targets) == 1:
        value = rec.get(targets[0])
        if isinstance(value, str):
            # a JSON string column stays the same JSON, re-serialised canonically
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if value is None or value == "":
            return ""
        return json.dumps(value, ensure_ascii=False)
    values = {t: _typed(rec.get(t)) for t in targets}
    if all(v is None or v == "" for v in values.values()):
        return ""
    return json.dumps(values, ensure_ascii=False, default=str)


def _typed(value: Any) -> Any:
    """A number as a JSON number: a CSV's "0.99" and PostgreSQL's Decimal('0.99') become
    0.99 (a scorer's ``score`` must come out as a number). Only text that is exactly how
    Python writes that number converts, so "007", "1e3" or "+1" stay strings."""
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, str):
        for kind in (int, float):
            try:
                number = kind(value)
            except ValueError:
                continue
            if str(number) == value and math.isfinite(number):
                return number
    return value


def _normalise_messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RowError("bad_messages", "messages is a string but not JSON") from None
    if not isinstance(value, list) or not value:
        raise RowError("bad_messages", "messages must be a non-empty list")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise RowError("bad_messages", f"message {i} is not an object")
        role = msg.get("role", msg.get("from"))
        content = msg.get("content", msg.get("value"))
        mapped = ROLE_ALIASES.get(str(role).lower()) if role is not None else None
        if mapped is None:
            raise RowError("bad_messages", f"message {i} has unknown role {role!r}")
        out.append({"role": mapped, "content": as_text(content)})
    return out


def build(rec: RawRecord, plan: SftPlan, cfg: DataConfig) -> Example:
    """One row to one Example, or RowError."""
    data = rec.data
    system_text = as_text(data.get(plan.system)) if plan.system else ""
    system_text = system_text or (cfg.system_prompt or "")
    if plan.mode == "messages":
        assert plan.messages is not None
        if plan.messages not in data:
            raise RowError("missing_field", f"missing field {plan.messages!r}")
        msgs = _normalise_messages(data[plan.messages])
        if msgs[-1]["role"] != "assistant":
            raise RowError("bad_messages", "the last message is not the assistant's")
        if not any(m["role"] == "user" for m in msgs):
            raise RowError("bad_messages", "no user message")
        if msgs[0]["role"] != "system" and system_text:
            msgs.insert(0, {"role": "system", "content": system_text})
        answer = msgs[-1]["content"]
        prompt = "\n".join(m["content"] for m in msgs[:-1] if m["role"] != "system")
    else:
        if plan.mode == "template":
            assert plan.targets is not None and plan.fields is not None and cfg.template
            for name in [*plan.fields, *plan.targets]:
                if name not in data:
                    raise RowError("missing_field", f"missing field {name!r}")
            prompt = cfg.template.format(**{f: as_text(data[f]) for f in plan.fields})
            answer = _render_target(data, plan.targets)
        else:
            assert plan.user is not None and plan.assistant is not None
            for name in (plan.user, plan.assistant):
                if name not in data:
                    raise RowError("missing_field", f"missing field {name!r}")
            prompt = as_text(data[plan.user])
            extra = as_text(data.get(plan.input)) if plan.input else ""
            if extra:
                prompt = f"{prompt}\n\n{extra}" if prompt else extra
            answer = as_text(data[plan.assistant])
        if not prompt.strip():
            raise RowError("empty_prompt", "the user turn is empty")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        if system_text:
            msgs.insert(0, {"role": "system", "content": system_text})
    if not answer.strip():
        raise RowError("empty_answer", "the answer is empty")
    category = as_text(data.get(plan.category)) if plan.category else None
    row: dict[str, Any] = {"messages": msgs}
    if plan.keep:
        row[KEPT] = {name: kept_value(data.get(name)) for name in plan.keep}
    return Example(row, answer, prompt, category or None, [rec])


KEPT = "columns"  # the prepared row's key for mapping.keep's columns


def kept_value(value: Any) -> Any:
    """A kept cell as JSON: numbers as numbers (a CSV's "0.99", PostgreSQL's Decimal), an
    empty cell as None, a date or other value as its text."""
    value = _typed(value)
    if value == "":
        return None
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def build_all(
    records: list[RawRecord], plan: SftPlan, cfg: DataConfig, ledger: Ledger
) -> list[Example]:
    out: list[Example] = []
    for rec in records:
        try:
            out.append(build(rec, plan, cfg))
        except RowError as exc:
            ledger.note(rec, exc.reason, exc.detail)
    return out
