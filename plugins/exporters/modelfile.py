"""Chat templates (Jinja, Hugging Face) to Ollama Modelfile TEMPLATEs (Go templates).

Jinja cannot be translated in general, so we recognise three families by their markers
and emit a hand-written Go template for each; anything else is refused with a clear
message. ``render_go`` renders the small Go-template subset we emit, so tests can check
that Ollama would produce the same prompt text as the HF chat template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hwkit.errors import UsageError


@dataclass(frozen=True)
class TemplateFamily:
    """A chat format: how to recognise it, its Go template and its stop strings."""

    name: str
    markers: tuple[str, ...]
    template: str
    stop: tuple[str, ...]


CHATML = TemplateFamily(
    "chatml",
    ("<|im_start|>", "<|im_end|>"),
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n",
    ("<|im_start|>", "<|im_end|>"),
)
LLAMA3 = TemplateFamily(
    "llama3",
    ("<|start_header_id|>", "<|eot_id|>"),
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)
MISTRAL = TemplateFamily(
    "mistral",
    ("[INST]", "[/INST]"),
    '{{- range .Messages }}{{ if eq .Role "system" }}{{ .Content }}\n\n'
    '{{ else if eq .Role "user" }}[INST] {{ .Content }} [/INST]'
    "{{ else }}{{ .Content }}</s>{{ end }}{{ end }}",
    ("[INST]", "[/INST]", "</s>"),
)
FAMILIES = (CHATML, LLAMA3, MISTRAL)


def detect_family(chat_template: str | None) -> TemplateFamily:
    """The family a HF chat template belongs to; refuses templates we cannot translate."""
    if not chat_template:
        raise UsageError(
            "the tokenizer has no chat template, so no Modelfile TEMPLATE can be derived",
            hint="pass --template-family chatml|llama3|mistral or add a chat template",
        )
    for family in FAMILIES:
        if all(m in chat_template for m in family.markers):
            return family
    raise UsageError(
        "cannot translate this chat template to an Ollama TEMPLATE",
        hint=f"supported families: {', '.join(f.name for f in FAMILIES)} "
        "(recognised by their special tokens); write the TEMPLATE by hand",
    )


def family_by_name(name: str) -> TemplateFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise UsageError(
        f"unknown template family {name!r}",
        hint=f"choose from {', '.join(f.name for f in FAMILIES)}",
    )


def default_system(tokenizer: Any) -> str | None:
    """The system prompt a HF template inserts when a conversation has none (SmolLM2 does)."""
    probe = "\x00probe\x00"
    bare = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False)
    with_sys = tokenizer.apply_chat_template(
        [{"role": "system", "content": "\x01"}, {"role": "user", "content": probe}], tokenize=False
    )
    if bare == with_sys:
        return None
    # Find the text the template put where our "\x01" system content would have gone.
    before, after = with_sys.split("\x01", 1)
    if bare.startswith(before):
        rest = bare[len(before) :]
        end = rest.find(after[: max(1, after.find(probe))]) if after else -1
        if end > 0:
            return rest[:end]
    return None


def _quote(text: str, what: str) -> str:
    if '"""' in text:
        raise UsageError(f'the {what} contains \'"""\', which a Modelfile cannot quote')
    return f'"""{text}"""'


def build_modelfile(
    *,
    gguf_name: str,
    family: TemplateFamily,
    system: str | None,
    temperature: float = 0.7,
    num_ctx: int = 2048,
) -> str:
    """Modelfile text: FROM (relative to the Modelfile), TEMPLATE, stops, parameters, SYSTEM."""
    lines = [
        f"# Written by hwkit export ollama; chat format: {family.name}",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quote(family.template, 'template')}",
    ]
    lines += [f'PARAMETER stop "{s}"' for s in family.stop]
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_ctx {int(num_ctx)}"]
    if system:
        lines.append(f"SYSTEM {_quote(system, 'system prompt')}")
    return "\n".join(lines) + "\n"


def parse_modelfile(text: str) -> dict[str, Any]:
    """FROM, TEMPLATE, SYSTEM and PARAMETERs of a Modelfile we wrote (triple-quoted values)."""
    out: dict[str, Any] = {"parameters": {}, "stop": []}
    for m in re.finditer(
        r'^(FROM|TEMPLATE|SYSTEM|PARAMETER)[ \t]+("""(.*?)"""|[^\n]*)$', text, re.M | re.S
    ):
        key, value = m.group(1), m.group(3) if m.group(3) is not None else m.group(2)
        if key == "PARAMETER":
            name, _, val = value.partition(" ")
            if name == "stop":
                out["stop"].append(val.strip().strip('"'))
            else:
                out["parameters"][name] = val.strip()
        else:
            out[key.lower()] = value
    return out


# --- a renderer for the Go-template subset emitted above ---------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s), applying ``{{-``/``-}}`` whitespace trims."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        parts.append(("text", text))
        parts.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = template[pos:]
    parts.append(("text", tail.lstrip() if trim_next else tail))
    return parts


def _cond(expr: str, msg: dict[str, str]) -> bool:
    m = re.fullmatch(r'eq \.Role "([^"]*)"', expr)
    if not m:
        raise ValueError(f"unsupported condition {expr!r}")
    return msg.get("role") == m.group(1)


def _parse(tokens: list[tuple[str, str]], i: int, stops: tuple[str, ...]) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while i < len(tokens):
        kind, val = tokens[i]
        if kind == "text":
            nodes.append(("text", val))
            i += 1
        elif val.startswith(stops) or val == "end":
            return nodes, i
        elif val == "range .Messages":
            body, i = _parse(tokens, i + 1, ())
            nodes.append(("range", body))
            i += 1  # the "end"
        elif val.startswith("if "):
            branches: list[tuple[str | None, list[Any]]] = []
            cond: str | None = val[3:]
            i += 1
            while True:
                body, i = _parse(tokens, i, ("else",))
                branches.append((cond, body))
                kind, val = tokens[i]
                i += 1
                if val == "end":
                    break
                cond = val[len("else if ") :] if val.startswith("else if ") else None
            nodes.append(("if", branches))
        else:
            nodes.append(("field", val))
            i += 1
    return nodes, i


def _render(nodes: list[Any], messages: list[dict[str, str]], msg: dict[str, str] | None) -> str:
    out = []
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "field":
            if msg is None or node[1] not in (".Role", ".Content"):
                raise ValueError(f"unsupported field {node[1]!r}")
            out.append(msg["role" if node[1] == ".Role" else "content"])
        elif kind == "range":
            out.extend(_render(node[1], messages, m) for m in messages)
        elif kind == "if":
            for cond, body in node[1]:
                if cond is None or (msg is not None and _cond(cond, msg)):
                    out.append(_render(body, messages, msg))
                    break
    return "".join(out)


def render_go(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """Render ``template`` the way Ollama does for /api/chat: the Modelfile's SYSTEM is
    prepended as a system message when the conversation has none."""
    if system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    nodes, _ = _parse(_tokens(template), 0, ())
    return _render(nodes, messages, None)
