"""A renderer for the subset of Go's text/template that Ollama Modelfile TEMPLATEs use.

Ollama renders a TEMPLATE with Go; we cannot run Go here, so this lets tests check that
Ollama would build the same prompt text as the Hugging Face chat template.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

#
# A faithful subset of Go's text/template as Ollama runs it: text, ``{{- ``/`` -}}`` trims,
# comments, ``if``/``else if``/``else``, ``range`` (with ``$i, $m :=``), variables (``$``,
# ``$x := …``), fields of the root (``.System``, ``.Messages``, ``.Tools``, ``.Response``) and
# of a message (``.Role``, ``.Content``), parenthesised calls and the builtins ``and or not eq
# ne lt le gt ge len slice index``. Anything else raises ValueError rather than guessing.

_GO_SPACE = " \t\r\n"  # what Go's trim markers remove (not Python's wider str.strip set)
_ACTION = re.compile(r"\{\{(-[ \t\r\n])?[ \t\r\n]*(.*?)[ \t\r\n]*([ \t\r\n]-)?\}\}", re.S)
_EXPR_TOKEN = re.compile(
    r"""[ \t\r\n]*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?[0-9]+)
    | (?P<decl>:=)
    | (?P<assign>=)
    | (?P<punct>[(),|])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.X,
)
_MESSAGE_FIELDS = ("Role", "Content")
_ROOT_FIELDS = ("System", "Messages", "Tools", "Response")


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int
    end: int


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s), applying ``{{- ``/`` -}}`` whitespace trims."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip(_GO_SPACE)
        if m.group(1):
            text = text.rstrip(_GO_SPACE)
        parts.append(("text", text))
        body = m.group(2)
        if not (body.startswith("/*") and body.endswith("*/")):  # a comment prints nothing
            parts.append(("action", body))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    parts.append(("text", tail.lstrip(_GO_SPACE) if trim_next else tail))
    return parts


def _lex(expr: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expr.rstrip(_GO_SPACE)):
        m = _EXPR_TOKEN.match(expr, pos)
        if not m or m.lastgroup is None:
            raise ValueError(f"unsupported Go template syntax in {expr!r}")
        out.append(_Tok(m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup), m.end()))
        pos = m.end()
    return out


def _parse(items: list[tuple[str, str]], i: int = 0, top: bool = True) -> tuple[list[Any], int]:
    """Nodes up to the ``else``/``end`` that closes the enclosing block (or the end)."""
    nodes: list[Any] = []
    while i < len(items):
        kind, val = items[i]
        word = val.split(None, 1)[0] if kind == "action" and val else ""
        if kind == "text":
            if val:
                nodes.append(("text", val))
            i += 1
        elif word in ("end", "else"):
            if top:
                raise ValueError(f"unexpected {{{{ {val} }}}}")
            return nodes, i
        elif word == "if":
            branches: list[tuple[str | None, list[Any]]] = []
            cond: str | None = val[2:].strip()
            i += 1
            while True:
                body, i = _parse(items, i, top=False)
                branches.append((cond, body))
                if i >= len(items):
                    raise ValueError("unclosed {{ if }}")
                stop = items[i][1]
                i += 1
                if stop == "end":
                    break
                if cond is None:
                    raise ValueError("{{ else }} must be the last branch of an {{ if }}")
                cond = stop[len("else if ") :].strip() if stop.startswith("else if ") else None
                if cond is None and stop != "else":
                    raise ValueError(f"unsupported {{{{ {stop} }}}}")
            nodes.append(("if", branches))
        elif word == "range":
            m = re.fullmatch(r"range\s+(?:(\$\w*)\s*(?:,\s*(\$\w*)\s*)?:=\s*)?(.+)", val, re.S)
            if not m:
                raise ValueError(f"unsupported {{{{ {val} }}}}")
            names = tuple(n for n in (m.group(1), m.group(2)) if n)
            body, i = _parse(items, i + 1, top=False)
            other: list[Any] = []
            if i < len(items) and items[i][1] == "else":
                other, i = _parse(items, i + 1, top=False)
            if i >= len(items) or items[i][1] != "end":
                raise ValueError("unclosed {{ range }}")
            i += 1
            nodes.append(("range", names, m.group(3), body, other))
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise ValueError(f"unsupported {{{{ {val} }}}}")
        else:
            nodes.append(("action", val))
            i += 1
    if not top:
        raise ValueError("unclosed block: missing {{ end }}")
    return nodes, i


def _truth(value: Any) -> bool:
    """Go's notion of true: non-zero, non-empty, not nil."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, str, list, dict)):
        return bool(value)
    raise ValueError(f"cannot test {value!r}")


def _same_kind(a: Any, b: Any) -> None:
    kinds = (bool, int, str)
    if not any(isinstance(a, k) and isinstance(b, k) for k in kinds) or (
        isinstance(a, bool) != isinstance(b, bool)
    ):
        raise ValueError(f"incompatible types for comparison: {a!r}, {b!r}")


def _go_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("eq needs at least two arguments")
    for b in others:
        _same_kind(a, b)
    return any(a == b for b in others)


def _go_cmp(op: str) -> Any:
    def cmp(a: Any, b: Any) -> bool:
        _same_kind(a, b)
        if isinstance(a, bool):
            raise ValueError(f"invalid type for comparison: {a!r}")
        return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]

    return cmp


def _go_and(*args: Any) -> Any:
    for a in args:
        if not _truth(a):
            return a
    return args[-1]


def _go_or(*args: Any) -> Any:
    for a in args:
        if _truth(a):
            return a
    return args[-1]


def _go_slice(x: Any, *idx: int) -> Any:
    if not isinstance(x, (list, str)) or len(idx) > 2:
        raise ValueError("unsupported slice")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(x)
    if not 0 <= lo <= hi <= len(x):
        raise ValueError(f"slice index out of range: {lo}:{hi} of {len(x)}")
    return x[lo:hi]


def _go_index(x: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(x, list) and isinstance(k, int) and 0 <= k < len(x):
            x = x[k]
        else:
            raise ValueError(f"error calling index: {k!r} out of range or of the wrong type")
    return x


_FUNCS: dict[str, Any] = {
    "and": _go_and,
    "or": _go_or,
    "not": lambda a: not _truth(a),
    "eq": _go_eq,
    "ne": lambda a, b: not _go_eq(a, b),
    "lt": _go_cmp("lt"),
    "le": _go_cmp("le"),
    "gt": _go_cmp("gt"),
    "ge": _go_cmp("ge"),
    "len": len,
    "slice": _go_slice,
    "index": _go_index,
}


class _Scope:
    """Root data, the current dot and the variable scopes (innermost last)."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.dot: Any = root
        self.vars: list[dict[str, Any]] = [{"$": root}]

    def lookup(self, name: str) -> Any:
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise ValueError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.vars):
            if name in frame:
                frame[name] = value
                return
        raise ValueError(f"undefined variable {name}")


def _field(value: Any, names: list[str]) -> Any:
    for name in names:
        if not isinstance(value, dict):
            raise ValueError(f"can't evaluate field .{name} of {value!r}")
        allowed = _ROOT_FIELDS if value.get("\0root") else _MESSAGE_FIELDS
        if name not in allowed:
            raise ValueError(f"unsupported field .{name}")
        value = value[name]
    return value


def _operands(toks: list[_Tok], scope: _Scope) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t.kind == "punct" and t.text == "(":
            depth, j = 0, i
            while j < len(toks):
                if toks[j].text == "(" and toks[j].kind == "punct":
                    depth += 1
                elif toks[j].text == ")" and toks[j].kind == "punct":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j == len(toks):
                raise ValueError("unbalanced parentheses")
            value = _pipeline(toks[i + 1 : j], scope)
            i = j + 1
            if i < len(toks) and toks[i].kind == "field" and toks[i].start == toks[j].end:
                value = _field(value, toks[i].text.split(".")[1:])  # (…).Field
                i += 1
            out.append(value)
            continue
        if t.kind == "str":
            out.append(json.loads(t.text))
        elif t.kind == "raw":
            out.append(t.text[1:-1])
        elif t.kind == "num":
            out.append(int(t.text))
        elif t.kind == "var":
            name, *fields = t.text.split(".")
            out.append(_field(scope.lookup(name), fields))
        elif t.kind == "field":
            out.append(scope.dot if t.text == "." else _field(scope.dot, t.text.split(".")[1:]))
        elif t.kind == "ident" and t.text in ("true", "false"):
            out.append(t.text == "true")
        else:
            raise ValueError(f"unsupported operand {t.text!r}")
        i += 1
    return out


def _pipeline(toks: list[_Tok], scope: _Scope) -> Any:
    if not toks:
        raise ValueError("empty pipeline")
    if any(t.kind == "punct" and t.text == "|" for t in toks):
        raise ValueError("pipelines with | are not supported")
    if toks[0].kind == "ident" and toks[0].text in _FUNCS:
        return _FUNCS[toks[0].text](*_operands(toks[1:], scope))
    values = _operands(toks, scope)
    if len(values) != 1:
        raise ValueError(f"can't give arguments to a non-function: {toks[0].text!r}")
    return values[0]


def _emit(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise ValueError(f"cannot print {value!r}")


def _render(nodes: list[Any], scope: _Scope) -> str:
    out: list[str] = []
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            toks = _lex(node[1])
            if len(toks) > 2 and toks[0].kind == "var" and toks[1].kind in ("decl", "assign"):
                value = _pipeline(toks[2:], scope)
                if toks[1].kind == "decl":
                    scope.vars[-1][toks[0].text] = value
                else:
                    scope.assign(toks[0].text, value)
            else:
                out.append(_emit(_pipeline(toks, scope)))
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or _truth(_pipeline(_lex(cond), scope)):
                    scope.vars.append({})
                    out.append(_render(body, scope))
                    scope.vars.pop()
                    break
        elif kind == "range":
            _, names, expr, body, other = node
            items = _pipeline(_lex(expr), scope)
            if not isinstance(items, list):
                raise ValueError(f"range over {items!r}")
            dot = scope.dot
            for index, item in enumerate(items):
                frame: dict[str, Any] = {}
                if len(names) == 1:
                    frame[names[0]] = item
                elif len(names) == 2:
                    frame[names[0]], frame[names[1]] = index, item
                scope.vars.append(frame)
                scope.dot = item
                out.append(_render(body, scope))
                scope.dot = dot
                scope.vars.pop()
            if not items:
                out.append(_render(other, scope))
    return "".join(out)


def _collate(messages: list[dict[str, str]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's ``collate``: consecutive messages of one role merge with a blank line, and
    ``.System`` is every system message joined the same way."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "system":
            system.append(content)
        if out and out[-1]["Role"] == role and role != "tool":
            out[-1]["Content"] += "\n\n" + content
        else:
            out.append({"Role": role, "Content": content})
    return "\n\n".join(system), out


def render_go(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """Render ``template`` the way Ollama does for /api/chat: the Modelfile's SYSTEM is
    prepended as a system message when the conversation has none, messages are collated,
    and ``.System`` joins the system messages."""
    if system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    joined, collated = _collate(messages)
    root: dict[str, Any] = {
        "\0root": True,
        "System": joined,
        "Messages": collated,
        "Tools": [],
        "Response": "",
    }
    nodes, _ = _parse(_tokens(template))
    return _render(nodes, _Scope(root))
