"""Anthropic HH-RLHF transcripts ("\\n\\nHuman: … \\n\\nAssistant: …") to chat messages, and
splitting a chosen/rejected pair of conversations into a shared prompt and the two completions
(the longest common prefix ending on a user turn, as trl's ``extract_prompt`` does)."""

from __future__ import annotations

import re

_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}

Messages = list[dict[str, str]]


class TranscriptError(ValueError):
    """The text is not a Human/Assistant transcript."""


def looks_like_transcript(text: object) -> bool:
    return isinstance(text, str) and ("Human:" in text[:200]) and "\n\nAssistant:" in text


def parse_transcript(text: str) -> Messages:
    """Turns in order; a turn's text keeps inner blank lines, loses its outer whitespace."""
    if text.startswith("Human:"):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise TranscriptError("text before the first 'Human:' turn")
    if len(parts) < 3:
        raise TranscriptError("no 'Human:'/'Assistant:' turns")
    return [
        {"role": _ROLES[role], "content": body.strip()}
        for role, body in zip(parts[1::2], parts[2::2], strict=True)
    ]


def split_pair(chosen: Messages, rejected: Messages) -> tuple[Messages, Messages, Messages]:
    """(prompt, chosen completion, rejected completion); the prompt ends with a user turn."""
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    # A completion must start with the assistant: back the prompt off to its last user turn.
    n = min(n, len(chosen) - 1, len(rejected) - 1)
    while n > 0 and chosen[n - 1]["role"] != "user":
        n -= 1
    if n == 0:
        raise TranscriptError("chosen and rejected share no user turn")
    return chosen[:n], chosen[n:], rejected[n:]
