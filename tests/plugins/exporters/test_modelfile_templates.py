"""Ollama Modelfile TEMPLATEs (Go) against the real upstream HF chat templates they stand for.

The upstream templates are stored in ``tests/fixtures/chat_templates`` (see the README
there for where each one comes from). Each is rendered by transformers' own Jinja code path
(``render_jinja_template``: a sandboxed environment with ``trim_blocks``/``lstrip_blocks``,
``raise_exception``, ``strftime_now``, the special tokens as variables), and the family's Go
template by ``render_go``, which renders like Ollama's /api/chat.

What must be equal: the HF text with ``add_generation_prompt=True``, minus its leading
``bos_token`` (llama.cpp, hence Ollama, adds BOS itself when it tokenizes the prompt), equals
the Go rendering, byte for byte. Two deliberate choices are pinned here:

* Llama 3.1+ templates always write a system header with "Cutting Knowledge Date: December
  2023" and "Today Date: 26 Jul 2024" (the template's default date). The ``llama3.1`` Go
  template reproduces it, unlike Ollama's own llama3.1 template, so a model fine-tuned on
  HF-rendered prompts sees the same prompt in Ollama. Llama 3.2's template prints today's date
  when the renderer has a clock (transformers does); Ollama templates have none, so we compare
  with ``date_string="26 Jul 2024"``, the date the Modelfile pins.
* HF templates ``|trim`` message content (Llama: every message; Mistral: assistant replies).
  Ollama's Go templates have no trim function, so contents with surrounding whitespace are the
  one known difference; ``test_trimmed_whitespace_is_the_only_difference`` pins exactly that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import UsageError
from hwkit.plugins.exporters.go_template import render_go
from hwkit.plugins.exporters.modelfile import (
    LLAMA3,
    LLAMA31,
    MISTRAL,
    TemplateFamily,
    build_modelfile,
    default_system,
    detect_family,
    parse_modelfile,
)

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

# fixture -> (family, special tokens and extra variables as the tokenizer passes them, the
# roles whose content the HF template trims)
UPSTREAM: dict[str, tuple[TemplateFamily, dict[str, str], tuple[str, ...]]] = {
    "llama3.jinja": (
        LLAMA3,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        ("system", "user", "assistant"),
    ),
    "llama3.1.jinja": (
        LLAMA31,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        ("system", "user", "assistant"),
    ),
    "llama3.2.jinja": (
        LLAMA31,
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "date_string": "26 Jul 2024"},
        ("system", "user", "assistant"),
    ),
    "mistral-v0.3.jinja": (
        MISTRAL,
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        ("assistant",),
    ),
}

CONVERSATIONS: dict[str, list[dict[str, str]]] = {
    "user": [{"role": "user", "content": "Hi"}],
    "system+user": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    "multi-turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Two\nlines"},
    ],
    "system+multi-turn": [
        {"role": "system", "content": "You are Ada.\nAnswer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour !"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Quatre."},
        {"role": "user", "content": "Thanks"},
    ],
}

# What add_generation_prompt=True appends (the Mistral template has no such prompt).
GENERATION_PROMPT = {
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "llama3.1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "",
}


def _template(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def hf_render(name: str, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` without a tokenizer:
    the same transformers function, with the special tokens the tokenizer would pass."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=_template(name),
        add_generation_prompt=add_generation_prompt,
        **UPSTREAM[name][1],
    )
    return str(rendered[0])


def hf_prompt(name: str, messages: list[dict[str, str]]) -> str:
    """The HF prompt as Ollama must produce it: generation prompt on, leading BOS removed."""
    text = hf_render(name, messages, add_generation_prompt=True)
    bos = UPSTREAM[name][1]["bos_token"]
    assert text.startswith(bos), "every upstream template starts with bos_token"
    assert not text[len(bos) :].startswith(bos), "BOS must appear once"
    return text[len(bos) :]


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_go_template_renders_like_the_upstream_template(name: str, conversation: str) -> None:
    family = UPSTREAM[name][0]
    messages = CONVERSATIONS[conversation]
    assert render_go(family.template, messages) == hf_prompt(name, messages)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_modelfile_system_stands_in_for_a_system_message(name: str) -> None:
    """Ollama prepends the Modelfile's SYSTEM when the request has no system message."""
    family = UPSTREAM[name][0]
    for conversation in ("system+user", "system+multi-turn"):
        with_system = CONVERSATIONS[conversation]
        system, rest = with_system[0]["content"], with_system[1:]
        assert render_go(family.template, rest, system) == hf_prompt(name, with_system)
        # A system message in the request wins over the Modelfile's SYSTEM.
        assert render_go(family.template, with_system, "ignored") == hf_prompt(name, with_system)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_generation_prompt_is_what_the_go_template_ends_with(name: str) -> None:
    """Ollama always renders the assistant prompt; it is exactly what HF adds for
    add_generation_prompt=True (and Mistral's template has none to add)."""
    family = UPSTREAM[name][0]
    for messages in CONVERSATIONS.values():
        bare = hf_render(name, messages, add_generation_prompt=False)
        full = hf_render(name, messages, add_generation_prompt=True)
        assert full == bare + GENERATION_PROMPT[family.name]
        assert render_go(family.template, messages).endswith(GENERATION_PROMPT[family.name])


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_trimmed_whitespace_is_the_only_difference(name: str) -> None:
    """HF ``|trim``s some contents; Ollama's templates cannot. Padded contents therefore
    differ, and trimming them where the HF template does gives the HF prompt back."""
    family, _, trimmed_roles = UPSTREAM[name]
    padded = [
        {"role": "system", "content": " Be brief.\n"},
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": "\nHello!  "},
        {"role": "user", "content": "Bye\n"},
    ]
    want = hf_prompt(name, padded)
    assert render_go(family.template, padded) != want
    trimmed = [
        {**m, "content": m["content"].strip() if m["role"] in trimmed_roles else m["content"]}
        for m in padded
    ]
    assert render_go(family.template, trimmed) == want


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("llama3.jinja", "llama3"),
        ("llama3.1.jinja", "llama3.1"),
        ("llama3.2.jinja", "llama3.1"),
        ("mistral-v0.3.jinja", "mistral"),
    ],
)
def test_detect_family_recognises_the_upstream_templates(name: str, family: str) -> None:
    assert detect_family(_template(name)).name == family


def test_mistral_v1_tokenizer_templates_are_refused() -> None:
    """Mistral-7B-Instruct v0.1/v0.2 write "[INST] … [/INST]" with a space before [/INST]
    (as stored in Ollama's template/index.json); the mistral family is v0.3's format."""
    v02 = (
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
        "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only "
        "user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    )
    with pytest.raises(UsageError, match=r"looks like mistral but writes ' \[/INST\]'"):
        detect_family(v02)


class _JinjaTokenizer:
    """Just enough of a tokenizer for ``default_system``: apply_chat_template, no vocab."""

    def __init__(self, name: str) -> None:
        self.name = name

    def apply_chat_template(self, messages: list[dict[str, str]], **kw: Any) -> str:
        return hf_render(self.name, messages, add_generation_prompt=False)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_no_default_system_prompt_is_invented(name: str) -> None:
    """Llama 3.1's date header must not be mistaken for a built-in system prompt (SmolLM2's
    template has one; these do not), so the Modelfile gets no SYSTEM line."""
    assert default_system(_JinjaTokenizer(name)) is None


@pytest.mark.parametrize("family", [LLAMA3, LLAMA31, MISTRAL], ids=lambda f: f.name)
def test_modelfile_round_trip_keeps_template_and_stops(family: TemplateFamily) -> None:
    text = build_modelfile(gguf_name="m.gguf", family=family, system="Be brief.")
    parsed = parse_modelfile(text)
    assert parsed["template"] == family.template
    assert parsed["system"] == "Be brief."
    assert tuple(parsed["stop"]) == family.stop
    # Stop strings: each family's end-of-turn markers, which its template writes itself.
    ends = {"llama3": "<|eot_id|>", "llama3.1": "<|eot_id|>", "mistral": "</s>"}
    assert ends[family.name] in family.stop and ends[family.name] in family.template


# --- the Go renderer itself: Go text/template semantics on small cases --------------------


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("a  {{- 1 -}}  b", "a1b"),
        ("a {{/* a comment */}}b", "a b"),
        ('{{ if eq .System "S" }}yes{{ else }}no{{ end }}', "yes"),
        ('{{ if ne .System "S" }}yes{{ else if .System }}other{{ end }}', "other"),
        ("{{ len .Messages }} {{ len (slice .Messages 1) }}", "3 2"),
        ("{{ (index .Messages 2).Content }}", "c"),
        (
            "{{ range $i, $m := .Messages }}{{ $i }}={{ $m.Role }} {{ end }}",
            "0=system 1=user 2=assistant ",
        ),
        ("{{ range .Messages }}{{ $.System }}{{ end }}", "SSS"),
        ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
        ("{{ and .System 0 }} {{ or .Tools .System }} {{ not .Tools }}", "0 S true"),
        ("{{ range .Tools }}x{{ else }}none{{ end }}", "none"),
    ],
)
def test_render_go_follows_go_semantics(template: str, want: str) -> None:
    convo = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "c"},
    ]
    assert render_go(template, convo) == want


def test_render_go_collates_like_ollama() -> None:
    msgs = [
        {"role": "system", "content": "A"},
        {"role": "system", "content": "B"},
        {"role": "user", "content": "x"},
        {"role": "user", "content": "y"},
    ]
    got = render_go("{{ .System }}|{{ range .Messages }}{{ .Role }}:{{ .Content }};{{ end }}", msgs)
    assert got == "A\n\nB|system:A\n\nB;user:x\n\ny;"


@pytest.mark.parametrize(
    "template",
    [
        "{{ .Prompt }}",  # legacy (non-Messages) variables are not part of what we emit
        "{{ range .Messages }}{{ .Images }}{{ end }}",
        "{{ eq .System 1 }}",  # incompatible types, an error in Go too
        "{{ .System | printf }}",
        "{{ with .System }}{{ . }}{{ end }}",
        "{{ if .System }}unclosed",
        "{{ end }}",
        "{{ slice .Messages 5 }}",
    ],
)
def test_render_go_refuses_what_it_does_not_support(template: str) -> None:
    with pytest.raises(ValueError):
        render_go(template, [{"role": "user", "content": "u"}], "S")
