"""``hwkit chat``: a terminal chat that streams from a local model or an hwkit/OpenAI server."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from hwkit.errors import UsageError
from hwkit.plugins.serving.sessions import trim_history

Message = dict[str, str]
Responder = Callable[[list[Message]], Iterator[str]]


def chat_loop(
    *,
    model: str,
    url: str | None,
    token: str | None,
    system: str | None,
    message: str | None,
    max_tokens: int,
    keep: int,
    out: TextIO = sys.stdout,
) -> None:
    """Read a line, stream the reply, repeat (``/exit`` or end of input stops).

    ``keep`` bounds the history sent with each turn (``sessions.trim_history``).
    """
    if keep < 1:
        # history[-0:] is the whole list, so 0 would silently mean "keep everything".
        raise UsageError(f"--keep {keep}: keep at least 1 message (the one being sent)")
    history: list[Message] = []
    responder = _remote(url, token, model, max_tokens) if url else _local(model, max_tokens)
    lines: Iterator[str] = iter([message]) if message is not None else _prompts(out)
    with responder as respond:
        for line in lines:
            text = line.strip()
            if text in ("/exit", "/quit"):
                break
            if not text:
                continue
            history.append({"role": "user", "content": text})
            history = trim_history(history, keep)
            messages = ([{"role": "system", "content": system}] if system else []) + history
            reply = []
            for piece in respond(messages):
                out.write(piece)
                out.flush()
                reply.append(piece)
            out.write("\n")
            history.append({"role": "assistant", "content": "".join(reply)})


def _prompts(out: TextIO) -> Iterator[str]:
    while True:
        out.write("> ")
        out.flush()
        line = sys.stdin.readline()
        if not line:
            return
        yield line


@contextlib.contextmanager
def _remote(url: str, token: str | None, model: str, max_tokens: int) -> Iterator[Responder]:
    from hwkit.extras import require

    openai = require("openai", purpose="hwkit chat --url")
    client = openai.OpenAI(base_url=url, api_key=token or "none", max_retries=0)

    def respond(messages: list[Message]) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
        )
        for chunk in stream:
            choices = getattr(chunk, "choices", None)
            if choices and choices[0].delta.content:
                yield str(choices[0].delta.content)

    try:
        yield respond
    finally:
        client.close()


@contextlib.contextmanager
def _local(model: str, max_tokens: int) -> Iterator[Responder]:
    """The model loaded through its ``generate`` plan on the process's runtime; greedy.

    Closed when the chat ends: a batching runtime's scheduler thread must not be left
    inside the library at interpreter exit (it aborted the process there)."""
    from hwkit.inference import GenerationParams
    from hwkit.jobs import load_generator

    generator = load_generator(model)
    params = GenerationParams(max_new_tokens=max_tokens)

    def respond(messages: list[Message]) -> Iterator[str]:
        prompt = generator.prompt(messages, max_tokens)
        yield from generator.stream(prompt, params)

    try:
        yield respond
    finally:
        generator.close()
