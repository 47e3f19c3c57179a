"""Server-Sent Events for a streamed chat completion, in OpenAI's chunk format.

The generator's ``stream`` is a blocking iterator (a scheduler thread decodes, into a queue
per request); a thread per stream reads it and hands each piece to the event loop, which
keeps serving other requests meanwhile. Closing the stream early (the client went away)
closes that iterator, which stops the request's row in its batch.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from hwkit.errors import HwkitError

if TYPE_CHECKING:
    from hwkit.inference import GenerationParams, Generator, Prompt

DONE = "data: [DONE]\n\n"


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


async def _pumped(it: Iterator[str], abandon: threading.Event) -> AsyncGenerator[str, None]:
    """The blocking iterator's pieces, read on one thread of its own and handed to the
    event loop as they come (one wake-up per piece, not a worker-thread round trip).

    When ``abandon`` is set (the response ended early), the thread closes the iterator
    after its next piece, from the thread that runs it: the runtime stops decoding."""
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def pump() -> None:
        try:
            for piece in it:
                loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
                if abandon.is_set():
                    break
            outcome: tuple[str, Any] = ("end", None)
        except BaseException as exc:  # handed to the event loop, re-raised there
            outcome = ("error", exc)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        with contextlib.suppress(RuntimeError):  # the loop has gone: nobody is listening
            loop.call_soon_threadsafe(queue.put_nowait, outcome)

    threading.Thread(target=pump, name="hwkit-stream", daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "piece":
            yield str(value)
        elif kind == "error":
            raise value
        else:
            return


async def chat_events(
    generator: Generator,
    prompt: Prompt,
    params: GenerationParams,
    *,
    model: str,
    cid: str,
    created: int,
    workers: threading.BoundedSemaphore | None,
    on_complete: Callable[[str], None],
    on_close: Callable[[], None],
    usage: bool = False,
    final: Callable[[str], dict[str, Any]] | None = None,
) -> AsyncGenerator[str, None]:
    """A role chunk, a content chunk per text piece, a finish chunk, then ``data: [DONE]``.

    ``workers`` (None for a batching model) is held while generating. With ``usage``
    (``stream_options.include_usage``) a chunk with no choices and the token counts
    follows the finish chunk, as OpenAI sends it. ``on_complete(text)``
    runs after a stream that finished (the session remembers it); ``on_close()`` always
    runs last, also when the stream is closed early (the queue slot and the model are given
    back, after the generator's iterator is closed: its row stops). An error while
    generating becomes one OpenAI-style error event (one that is not hwkit's own is also
    logged). ``final(text)`` gives extension fields for the finish chunk (a RAG model's
    ``citations``).
    """
    import anyio

    from hwkit.inference import StreamResult

    def chunk(
        delta: dict[str, Any], finish: str | None = None, extra: dict[str, Any] | None = None
    ) -> str:
        return _event(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                **(extra or {}),
            }
        )

    result = StreamResult()
    pieces: list[str] = []
    abandon = threading.Event()
    it: Iterator[str] | None = None
    held = False
    try:
        # Polled, not waited for on a thread: a cancelled wait can never leave it taken.
        while workers is not None and not workers.acquire(blocking=False):
            await anyio.sleep(0.02)
        held = workers is not None
        try:
            it = generator.stream(prompt, params, result)
            yield chunk({"role": "assistant", "content": ""})
            async for piece in _pumped(it, abandon):
                pieces.append(piece)
                yield chunk({"content": piece})
        except Exception as exc:  # the stream ends with the error; the server stays up
            message = exc.one_line() if isinstance(exc, HwkitError) else f"generation failed: {exc}"
            if not isinstance(exc, HwkitError):
                from hwkit.log import get_logger

                get_logger(__name__).error("serve.generation_failed", model=model, error=repr(exc))
            error = {"message": message, "type": "server_error", "code": None}
            yield _event({"error": {**error, "param": None}})
            return
        yield chunk({}, result.finish_reason, final("".join(pieces)) if final else None)
        if usage:
            tokens = prompt.prompt_tokens, result.completion_tokens
            yield _event(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": tokens[0],
                        "completion_tokens": tokens[1],
                        "total_tokens": sum(tokens),
                    },
                }
            )
        yield DONE
        on_complete("".join(pieces))
    finally:
        abandon.set()  # the pump closes an unfinished iterator: its request stops decoding
        if held and workers is not None:
            workers.release()
        on_close()
