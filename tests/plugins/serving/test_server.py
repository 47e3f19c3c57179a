"""``hwkit serve`` against the official ``openai`` client, on loopback with real models."""
# ruff: noqa: F811  (pytest fixtures imported from the export fixtures module)

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from hwkit.errors import ConfigError, UsageError
from hwkit.plugins.serving.config import ServeConfig, check_bind, parse_size
from hwkit.plugins.serving.routes import create_app
from hwkit.plugins.serving.sessions import load_personas
from hwkit.testing import mock_runtime
from tests.plugins.exporters.test_export_fixtures import lora_run, merged_lora, smol  # noqa: F401
from tests.plugins.serving.live_server import running

TOKEN = "s3cret-token"


def planned_bytes(source: Path, runtime: Any, sequences: int = 1) -> int:
    """What the ``generate`` plan of ``source`` for ``sequences`` concurrent sequences takes
    on ``runtime`` (loaded once to see)."""
    from hwkit.jobs import load_generator

    generator = load_generator(source, runtime=runtime, sequences=sequences)
    try:
        return generator.plan.estimate.total
    finally:
        generator.close()


@pytest.fixture(scope="module")
def server(smol: Path, merged_lora: Path) -> Iterator[dict[str, Any]]:
    """uvicorn on 127.0.0.1 in a thread, models planned on a mock CPU for 2 concurrent
    sequences each; the budget holds one model, not two."""
    runtime = mock_runtime("cpu")
    config = ServeConfig(
        models={"smol": str(smol), "smol-lora": str(merged_lora)},
        token=TOKEN,
        memory_budget=int(planned_bytes(smol, runtime, sequences=2) * 1.5),
        batch=2,
        session_messages=4,
        max_queue=2,
        workers=1,
        max_request_bytes=8192,
        max_messages=8,
        max_tokens_limit=16,
        default_max_tokens=8,
    )
    app = create_app(config, runtime)
    with running(app) as port:
        base = f"http://127.0.0.1:{port}"
        yield {"base": base, "state": app.state.hwkit, "config": config}


@pytest.fixture(scope="module")
def client(server: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key=TOKEN, max_retries=0)


def _ask(client: openai.OpenAI, text: str, **kw: Any) -> Any:
    return client.chat.completions.create(
        model=kw.pop("model", "smol"), messages=[{"role": "user", "content": text}], **kw
    )


def test_health_and_models_list_served_models(
    server: dict[str, Any], client: openai.OpenAI
) -> None:
    health = httpx.get(server["base"] + "/health").json()
    assert health["status"] == "ok" and health["models"] == ["smol", "smol-lora"]
    assert [m.id for m in client.models.list().data] == ["smol", "smol-lora"]


def test_wrong_or_missing_token_is_401(server: dict[str, Any]) -> None:
    bad = openai.OpenAI(base_url=server["base"] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        _ask(bad, "hi", max_tokens=2)
    r = httpx.post(server["base"] + "/v1/chat/completions", json={"model": "smol", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not served; known: smol, smol-lora"):
        _ask(client, "hi", model="gpt-9")


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([{"role": "wizard", "content": "hi"}], "messages.0.role"),
        ([{"role": "user"}], "messages.0.content"),
        ([], "messages"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "text"),
    ],
)
def test_malformed_messages_are_400(client: openai.OpenAI, messages: Any, needle: str) -> None:
    with pytest.raises(openai.BadRequestError, match=needle):
        client.chat.completions.create(model="smol", messages=messages, max_tokens=2)


def test_non_json_body_is_400(server: dict[str, Any]) -> None:
    r = httpx.post(
        server["base"] + "/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


def test_oversized_requests_are_413_and_long_generations_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError, match="exceeds the limit of 8192") as exc:
        _ask(client, "x" * 9000, max_tokens=2)
    assert exc.value.status_code == 413
    many = [{"role": "user", "content": "hi"}] * 9
    with pytest.raises(openai.APIStatusError, match="9 messages exceed the limit of 8") as exc:
        client.chat.completions.create(model="smol", messages=many, max_tokens=2)  # type: ignore[arg-type]
    assert exc.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="max_tokens 17 exceeds"):
        _ask(client, "hi", max_tokens=17)


def test_streaming_matches_non_streaming(server: dict[str, Any], client: openai.OpenAI) -> None:
    reply = _ask(client, "What is the capital of France?", max_tokens=8)
    text = reply.choices[0].message.content
    assert text and reply.usage is not None
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.choices[0].finish_reason in ("stop", "length")
    chunks = list(_ask(client, "What is the capital of France?", max_tokens=8, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: same tokens either way
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    # the raw wire format ends with the OpenAI sentinel
    body = {
        "model": "smol",
        "stream": True,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    with httpx.stream(
        "POST",
        server["base"] + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"


def test_sessions_keep_the_last_n_messages(server: dict[str, Any], client: openai.OpenAI) -> None:
    first = _ask(client, "My name is Ada.", max_tokens=4, user="session-a")
    second = _ask(client, "What is my name?", max_tokens=4, user="session-a")
    alone = _ask(client, "What is my name?", max_tokens=4)
    # the session's earlier turn (question and answer) is in the second prompt
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + first.usage.completion_tokens
    history = server["state"].sessions.history("session-a")
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    _ask(client, "And again?", max_tokens=2, extra_headers={"X-Session-Id": "session-a"})
    history = server["state"].sessions.history("session-a")
    assert len(history) == 4 and history[0]["content"] == "What is my name?"


def test_persona_becomes_the_system_prompt(client: openai.OpenAI) -> None:
    plain = _ask(client, "Hi", max_tokens=2)
    tutor = _ask(client, "Hi", max_tokens=2, extra_body={"persona": "tutor"})
    assert tutor.usage.prompt_tokens != plain.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError, match="unknown persona 'pirate'"):
        _ask(client, "Hi", max_tokens=2, extra_body={"persona": "pirate"})


def test_concurrent_requests_are_bounded(server: dict[str, Any], client: openai.OpenAI) -> None:
    def one(i: int) -> str:
        try:
            _ask(client, f"Count to {i}.", max_tokens=6)
            return "ok"
        except openai.RateLimitError:
            return "429"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(one, range(6)))
    assert "ok" in outcomes and "429" in outcomes, outcomes
    assert server["state"].active == 0  # every slot was given back


def test_hwkit_chat_streams_from_the_server(server: dict[str, Any], client: openai.OpenAI) -> None:
    import io

    from hwkit.plugins.serving.chat import chat_loop

    buf = io.StringIO()
    chat_loop(
        model="smol",
        url=server["base"] + "/v1",
        token=TOKEN,
        system=None,
        message="What is the capital of France?",
        max_tokens=8,
        keep=10,
        out=buf,
    )
    want = _ask(client, "What is the capital of France?", max_tokens=8).choices[0].message.content
    assert buf.getvalue() == f"{want}\n"


def test_second_model_evicts_the_least_recently_used(
    server: dict[str, Any], client: openai.OpenAI
) -> None:
    state = server["state"]
    assert state.pool.loaded() == ["smol"]
    reply = _ask(client, "Hi", model="smol-lora", max_tokens=4)
    assert reply.model == "smol-lora" and reply.choices[0].message.content is not None
    assert state.pool.loaded() == ["smol-lora"] and state.pool.evictions == ["smol"]
    assert state.pool.used_bytes() <= state.pool.budget


def test_health_says_where_each_loaded_model_is_and_why(server: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=server["base"] + "/v1", api_key=TOKEN, max_retries=0)
    _ask(client, "Hi", model="smol-lora", max_tokens=2)
    health = httpx.get(server["base"] + "/health").json()
    placed = health["placements"]["smol-lora"]
    plan = server["state"].pool.get("smol-lora").plan
    assert placed["device"] == plan.device == "cpu:0" and placed["runtime"] == "transformers"
    assert placed["dtype"] == plan.dtype == "float32"
    assert placed["planned_bytes"] == plan.estimate.total == health["memory_used"]
    assert placed["reasons"]["device"].startswith("cpu:0")
    assert placed["reasons"]["runtime"].startswith("transformers")
    assert health["reserved"] == {"cpu:0": plan.estimate.total}


def test_bind_beyond_localhost_needs_a_token() -> None:
    cfg = ServeConfig(models={"m": "x"}, host="0.0.0.0", memory_budget=1)
    with pytest.raises(UsageError, match=r"refusing to bind 0\.0\.0\.0 without a bearer token"):
        check_bind(cfg)
    check_bind(cfg.model_copy(update={"token": "t"}))
    check_bind(cfg.model_copy(update={"host": "127.0.0.1"}))


def test_personas_file_and_sizes(tmp_path: Path) -> None:
    good = tmp_path / "p.toml"
    good.write_text('[pirate]\nsystem = "Talk like a pirate."\n')
    assert load_personas(good)["pirate"] == "Talk like a pirate."
    bad = tmp_path / "bad.toml"
    bad.write_text("[pirate]\nsystem = 3\n")
    with pytest.raises(ConfigError, match=r"bad.toml: \[pirate\] needs a non-empty string"):
        load_personas(bad)
    assert parse_size("600MB") == 600_000_000 and parse_size("2GiB") == 2 * 2**30
