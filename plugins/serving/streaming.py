"""Server-Sent Events for a streamed chat completion, in OpenAI's chunk format.

The generator's ``stream`` is a blocking iterator (a worker thread decodes); each piece is
fetched on a thread so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from hwkit.errors import HwkitError

if TYPE_CHECKING:
    from hwkit.inference import GenerationParams, Generator, Prompt

DONE = "data: [DONE]\n\n"


def _event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


async def chat_events(
    generator: Generator,
    prompt: Prompt,
    params: GenerationParams,
    *,
    model: str,
    cid: str,
    created: int,
    workers: threading.BoundedSemaphore,
    on_complete: Callable[[str], None],
    on_close: Callable[[], None],
) -> AsyncIterator[str]:
    """A role chunk, a content chunk per text piece, a finish chunk, then ``data: [DONE]``.

    ``on_complete(text)`` runs after a stream that finished (the session remembers it);
    ``on_close()`` always runs last (the queue slot and the model are given back). An error
    while generating becomes one OpenAI-style error event.
    """
    import anyio

    from hwkit.inference import StreamResult

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _event(
            {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
        )

    result = StreamResult()
    pieces: list[str] = []
    end = object()
    try:
        await anyio.to_thread.run_sync(workers.acquire)
        try:
            it = generator.stream(prompt, params, result)
            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await anyio.to_thread.run_sync(next, it, end)
                if piece is end:
                    break
                pieces.append(str(piece))
                yield chunk({"content": str(piece)})
        except HwkitError as exc:
            error = {"message": exc.one_line(), "type": "server_error", "code": None}
            yield _event({"error": {**error, "param": None}})
            return
        finally:
            workers.release()
        yield chunk({}, result.finish_reason)
        yield DONE
        on_complete("".join(pieces))
    finally:
        on_close()
