"""The chat endpoint's ``seed`` field: a sampled reply is the same for the same seed, on
SmolLM2's GGUF (llama.cpp runtime, the fastest on a CPU) served on a mock CPU over loopback.
Replies are at most 8 tokens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.routes import create_app
from hwkit.testing import mock_runtime
from tests.plugins.serving.live_server import running

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx2")


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    """The server, generating on one core: llama.cpp takes a thread per core it may use
    and spins them, slow on a CPU shared with other work (see tests/plugins/data)."""
    from hwkit.models import SMOLLM2

    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cores:
        os.sched_setaffinity(0, {min(cores)})

    config = ServeConfig(
        models={"smol": str(SMOLLM2.gguf_path())},
        context=256,
        default_max_tokens=8,
        max_tokens_limit=8,
    )
    app = create_app(config, mock_runtime("cpu"))
    try:
        with running(app) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        app.state.hwkit.pool.close()
        if cores:
            os.sched_setaffinity(0, cores)


def reply(base: str, **body: Any) -> str:
    response = httpx.post(
        base + "/v1/chat/completions",
        json={
            "model": "smol",
            "messages": [{"role": "user", "content": "Tell me a joke."}],
            "max_tokens": 8,
            "temperature": 1.0,
            **body,
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    text: str = response.json()["choices"][0]["message"]["content"]
    return text


def test_the_same_seed_gives_the_same_sampled_reply(base: str) -> None:
    first = reply(base, seed=7)
    assert reply(base, seed=7) == first
    assert any(reply(base, seed=seed) != first for seed in (8, 9, 10))


def test_a_seed_that_is_not_an_integer_is_400(base: str) -> None:
    response = httpx.post(
        base + "/v1/chat/completions",
        json={"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "seed": "x"},
        timeout=60,
    )
    assert response.status_code == 400 and "seed" in response.text
