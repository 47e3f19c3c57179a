"""Text generation for the chat server and ``hwkit chat``: greedy unless a temperature is
given; streaming through transformers' ``TextIteratorStreamer`` on a worker thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hwkit.errors import UsageError

Message = dict[str, str]


@dataclass
class Prompt:
    """Chat-template token ids for one request, with what generation needs to know."""

    input_ids: Any
    prompt_tokens: int
    max_new_tokens: int


def build_prompt(
    tokenizer: Any, model: Any, messages: list[Message], max_new_tokens: int
) -> Prompt:
    """Render ``messages`` with the model's chat template; refuse prompts over the context."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    n = int(ids.shape[1])
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    if n + max_new_tokens > ctx:
        raise UsageError(
            f"prompt of {n} tokens plus max_tokens {max_new_tokens} exceeds the model's "
            f"context of {ctx}",
            hint="send fewer messages or lower max_tokens",
        )
    return Prompt(ids, n, max_new_tokens)


def _gen_kwargs(
    tokenizer: Any, prompt: Prompt, temperature: float | None, top_p: float | None
) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {
        "input_ids": prompt.input_ids,
        "attention_mask": torch.ones_like(prompt.input_ids),
        "max_new_tokens": prompt.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }
    if temperature:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p or 1.0))
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _finish(new_tokens: int, max_new: int, last: int | None, eos: Any) -> str:
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    return "length" if new_tokens >= max_new and last not in eos_ids else "stop"


def generate(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
) -> tuple[str, int, str]:
    """The whole reply: (text, completion tokens, finish reason)."""
    import torch

    with torch.inference_mode():
        out = model.generate(**_gen_kwargs(tokenizer, prompt, temperature, top_p))
    new = out[0, prompt.prompt_tokens :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    last = int(new[-1]) if len(new) else None
    eos = model.generation_config.eos_token_id
    return text, len(new), _finish(len(new), prompt.max_new_tokens, last, eos)


class StreamResult:
    """Filled by the generation thread: the token count and finish reason, or its error."""

    completion_tokens: int = 0
    finish_reason: str = "stop"
    error: BaseException | None = None


def stream(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    lock: threading.Lock | None = None,
    result: StreamResult | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated; ``result`` is complete when this ends."""
    import torch
    from transformers import TextIteratorStreamer

    result = result if result is not None else StreamResult()
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
    )
    kwargs = _gen_kwargs(tokenizer, prompt, temperature, top_p)

    def work() -> None:
        try:
            if lock is not None:
                lock.acquire()
            try:
                with torch.inference_mode():
                    out = model.generate(**kwargs, streamer=streamer)
            finally:
                if lock is not None:
                    lock.release()
            new = out[0, prompt.prompt_tokens :]
            result.completion_tokens = len(new)
            last = int(new[-1]) if len(new) else None
            result.finish_reason = _finish(
                len(new), prompt.max_new_tokens, last, model.generation_config.eos_token_id
            )
        except BaseException as exc:  # reported to the consumer, never lost in the thread
            result.error = exc
            streamer.end()

    thread = threading.Thread(target=work, name="hwkit-generate", daemon=True)
    thread.start()
    for piece in streamer:
        if piece:
            yield piece
    thread.join()
    if result.error is not None:
        raise result.error
