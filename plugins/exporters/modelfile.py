"""Chat templates (Jinja, Hugging Face) to Ollama Modelfile TEMPLATEs (Go templates).

Jinja cannot be translated in general, so we recognise a few families by their markers
(ChatML, Llama 3, Llama 3.1+, Mistral v0.3) and emit a hand-written Go template for each;
anything else is refused with a clear message. ``render_go`` renders the Go-template subset
we emit (``go_template.render_go``), so tests can check that Ollama would produce the same
prompt text as the HF chat template (tests/test_modelfile_templates.py does, against the
upstream templates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hwkit.errors import UsageError


@dataclass(frozen=True)
class TemplateFamily:
    """A chat format: how to recognise it, its Go template and its stop strings.

    ``unlike`` lists fragments of look-alike formats that share the markers but not the
    spacing; a template containing one is refused rather than rendered wrongly.
    """

    name: str
    markers: tuple[str, ...]
    template: str
    stop: tuple[str, ...]
    unlike: tuple[str, ...] = ()


CHATML = TemplateFamily(
    "chatml",
    ("<|im_start|>", "<|im_end|>"),
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n",
    ("<|im_start|>", "<|im_end|>"),
)
# Meta-Llama-3-8B-Instruct: every message, the system one included, in its own header.
LLAMA3 = TemplateFamily(
    "llama3",
    ("<|start_header_id|>", "<|eot_id|>"),
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)
# Llama 3.1/3.2: the HF template always writes a system header carrying the knowledge
# cut-off and "Today Date" (its default "26 Jul 2024"; 3.2 uses today's date when the renderer
# has a clock, Ollama's templates have none), then the system message. Ollama's own llama3.1
# template leaves the date lines out; we keep them so the prompt is the one transformers
# renders, which is what a model fine-tuned on HF-templated data has seen.
LLAMA31 = TemplateFamily(
    "llama3.1",
    ("<|start_header_id|>", "<|eot_id|>", "Cutting Knowledge Date"),
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    "{{ .System }}<|eot_id|>\n"
    '{{- range .Messages }}{{ if ne .Role "system" }}'
    "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
    "{{ end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
)
# Mistral-7B-Instruct-v0.3 (v3 tokenizer): no space before [/INST], the system message goes
# into the LAST user turn, assistant content follows a space and ends with </s>. The
# last-message test is the one Ollama's own mistral template uses. The v0.1/v0.2 templates
# (v1 tokenizer) write " [/INST]" with a space: a different format, refused.
MISTRAL = TemplateFamily(
    "mistral",
    ("[INST]", "[/INST]"),
    "{{- range $i, $_ := .Messages }}\n"
    '{{- if eq .Role "user" }}[INST] '
    "{{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}\n\n{{ end }}"
    "{{ .Content }}[/INST]\n"
    '{{- else if eq .Role "assistant" }} {{ .Content }}</s>\n'
    "{{- end }}\n"
    "{{- end }}",
    ("[INST]", "[/INST]", "</s>"),
    unlike=("' [/INST]'", '" [/INST]"'),
)
# Listed in this order in messages; detection tries the most specific family first.
FAMILIES = (CHATML, LLAMA3, MISTRAL, LLAMA31)
_DETECTION_ORDER = (CHATML, LLAMA31, LLAMA3, MISTRAL)


def detect_family(chat_template: str | None) -> TemplateFamily:
    """The family a HF chat template belongs to; refuses templates we cannot translate."""
    if not chat_template:
        raise UsageError(
            "the tokenizer has no chat template, so no Modelfile TEMPLATE can be derived",
            hint=f"pass --template-family {'|'.join(f.name for f in FAMILIES)} "
            "or add a chat template",
        )
    for family in _DETECTION_ORDER:
        if all(m in chat_template for m in family.markers):
            odd = [u for u in family.unlike if u in chat_template]
            if odd:
                raise UsageError(
                    f"this chat template looks like {family.name} but writes {odd[0]}, "
                    f"which the {family.name} TEMPLATE does not reproduce",
                    hint=f"--template-family {family.name} forces it anyway; "
                    "or write the TEMPLATE by hand",
                )
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
