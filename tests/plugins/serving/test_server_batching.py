"""``hwkit serve`` with a batching model: concurrent streams decode together, a slow client
stalls nobody, and a client that goes away gives its row, queue slot and model back.

One SmolLM2 planned on a mock CPU for 4 concurrent sequences, served on loopback by
uvicorn; ``workers=1``, which bounds models that decode one sequence at a time only.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest

from hwkit.plugins.runtimes.transformers import TransformersGenerator
from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.routes import create_app
from hwkit.testing import mock_runtime
from tests.plugins.serving.live_server import running

MODEL = "smollm2-135m-instruct"
LONG = "Count from 1 to 500, separated by commas."


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, Any]]:
    config = ServeConfig(
        models={"smol": MODEL},
        batch=4,
        max_queue=4,
        workers=1,
        max_tokens_limit=200,
        default_max_tokens=8,
    )
    app = create_app(config, mock_runtime("cpu"))
    with running(app) as port:
        state = app.state.hwkit
        generator = state.pool.get("smol")
        assert isinstance(generator, TransformersGenerator)
        assert generator.plan.micro_batch == generator.batch == 4  # --batch reached the plan
        yield {
            "base": f"http://127.0.0.1:{port}",
            "port": port,
            "app": app,
            "state": state,
            "gen": generator,
        }


def _body(text: str, max_tokens: int, stream: bool = True) -> dict[str, Any]:
    return {
        "model": "smol",
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": text}],
    }


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: ") :])


def _reply(events: Iterator[dict[str, Any]]) -> tuple[str, str | None]:
    """(streamed text, finish reason)."""
    text, finish = [], None
    for event in events:
        choice = event["choices"][0]
        text.append(choice["delta"].get("content") or "")
        finish = choice["finish_reason"] or finish
    return "".join(text), finish


def _stream(base: str, text: str, max_tokens: int) -> tuple[str, str | None]:
    with httpx.stream(
        "POST", base + "/v1/chat/completions", json=_body(text, max_tokens), timeout=600
    ) as r:
        assert r.status_code == 200
        return _reply(_events(r.iter_lines()))


def _settled(server: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """``/health`` once no request holds a queue slot (or the timeout passed)."""
    deadline = time.time() + timeout
    while True:
        health: dict[str, Any] = httpx.get(server["base"] + "/health").json()
        if health["queue"] == 0 or time.time() > deadline:
            return health
        time.sleep(0.05)


def _users(server: dict[str, Any]) -> int:
    """Requests holding the model's lease."""
    return int(server["state"].pool._loaded["smol"].users)


def test_concurrent_streams_decode_in_one_batch_as_they_would_alone(
    server: dict[str, Any],
) -> None:
    asks = [("What is the capital of France?", 10), ("Hi", 6), ("Count from 1 to 20.", 8)]
    alone = [_stream(server["base"], text, n) for text, n in asks]
    gen = server["gen"]
    before = gen.batcher.gather_s, gen.batcher.gather_max_s
    # deterministic: the three requests meet in one batch
    gen.batcher.gather_s = gen.batcher.gather_max_s = 5.0
    try:
        with ThreadPoolExecutor(max_workers=len(asks)) as pool:
            together = list(pool.map(lambda a: _stream(server["base"], *a), asks))
    finally:
        gen.batcher.gather_s, gen.batcher.gather_max_s = before
    assert together == alone
    assert gen.batcher.wait_idle(timeout=120) and gen.batcher.records[-1].rows == 3
    assert _settled(server)["queue"] == 0 and _users(server) == 0


def test_a_slow_client_stalls_no_other(server: dict[str, Any]) -> None:
    quick_alone = _stream(server["base"], "Hi", 6)
    slow_alone = _stream(server["base"], "Count from 1 to 20.", 16)
    with httpx.stream(
        "POST",
        server["base"] + "/v1/chat/completions",
        json=_body("Count from 1 to 20.", 16),
        timeout=600,
    ) as slow:
        lines = slow.iter_lines()
        first = next(lines)  # then reads nothing while the other request runs
        assert _stream(server["base"], "Hi", 6) == quick_alone
        assert _reply(_events(iter([first, *lines]))) == slow_alone
    assert _settled(server)["queue"] == 0


def test_a_client_that_disconnects_mid_stream_frees_its_row_slot_and_lease(
    server: dict[str, Any],
) -> None:
    gen = server["gen"]
    assert gen.batcher.wait_idle(timeout=120)
    batches = len(gen.batcher.records)
    with httpx.stream(
        "POST", server["base"] + "/v1/chat/completions", json=_body(LONG, 200), timeout=600
    ) as r:
        content = (e for e in _events(r.iter_lines()) if e["choices"][0]["delta"].get("content"))
        assert next(content)  # decoding; then the connection closes
    health = _settled(server)
    assert health["queue"] == 0 and _users(server) == 0
    assert gen.batcher.wait_idle(timeout=120)
    (record,) = list(gen.batcher.records)[batches:]
    assert record.rows == 1 and record.steps < 100  # stopped, not run to its 200 tokens


def test_a_client_gone_before_the_first_chunk_gives_its_slot_back(server: dict[str, Any]) -> None:
    body = json.dumps(_body(LONG, 200)).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server["port"])) as sock:
            sock.sendall(request)  # and hangs up at once
    health = _settled(server)
    assert health["queue"] == 0 and _users(server) == 0
    assert server["gen"].batcher.wait_idle(timeout=120)
    assert _stream(server["base"], "Hi", 2)[0]  # the server still serves


def test_requests_beyond_max_queue_are_429_while_streams_run(server: dict[str, Any]) -> None:
    url = server["base"] + "/v1/chat/completions"
    with httpx.Client(timeout=600) as client:
        held = []
        try:
            for _ in range(4):  # max_queue: each holds a slot until closed
                response = client.send(
                    client.build_request("POST", url, json=_body(LONG, 200)), stream=True
                )
                assert response.status_code == 200
                held.append(response)
            refused = httpx.post(url, json=_body("Hi", 2, stream=False))
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "queue_full"
        finally:
            for response in held:
                response.close()
    assert _settled(server)["queue"] == 0 and _users(server) == 0
    assert httpx.post(url, json=_body("Hi", 2, stream=False), timeout=600).status_code == 200


def test_a_stream_cancelled_before_its_body_starts_gives_its_slot_back(
    server: dict[str, Any],
) -> None:
    """The ASGI server saw the client go before the response started, and its ``send``
    yields (as uvicorn's does while a client's buffer is full): Starlette cancels the
    response before the body generator has run at all, so the generator's own ``finally``
    never runs; the response still gives the slot and the model back."""
    import anyio

    app = server["app"]
    body = json.dumps(_body(LONG, 200)).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", server["port"]),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        await anyio.sleep(0)
        sent.append(message)

    def gone_after_the_body() -> Any:
        incoming = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        return receive

    async def drive() -> None:
        for _ in range(3):
            await app(scope, gone_after_the_body(), send)

    anyio.run(drive)
    assert all(m["type"] != "http.response.body" for m in sent)  # nothing was streamed
    health = _settled(server, timeout=30)
    assert health["queue"] == 0 and _users(server) == 0


def test_stream_options_include_usage_ends_with_the_token_counts(server: dict[str, Any]) -> None:
    url = server["base"] + "/v1/chat/completions"
    reply = httpx.post(url, json=_body("Hi", 4, stream=False), timeout=600).json()
    body = {**_body("Hi", 4), "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url, json=body, timeout=600) as r:
        events = list(_events(r.iter_lines()))
    assert events[-1]["choices"] == [] and events[-1]["usage"] == reply["usage"]
    assert _reply(iter(events[:-1])) == (
        reply["choices"][0]["message"]["content"],
        reply["choices"][0]["finish_reason"],
    )
