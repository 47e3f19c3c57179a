"""The Ollama deploy target against a fake Ollama server (http.server in a thread).

The fake keeps its state in dicts (blobs, models: name -> manifest digest) and records every
call, so the tests see what was sent, in which order, and that nothing was sent when the
server is unreachable. The GGUF files are a few bytes: the target must not parse them.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hwkit.deploy import DeployError, Deployment
from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.plugins.deploy.ollama import OllamaTarget, parse_modelfile
from hwkit.plugins.exporters.modelfile import CHATML, build_modelfile

MODELFILE = '''# written by hand for the test
FROM ./model.gguf
TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
PARAMETER stop "<|im_start|>"
PARAMETER stop "<|im_end|>"
PARAMETER temperature 0.7
PARAMETER num_ctx 4096
SYSTEM """You answer from the manual."""
'''


class FakeOllama:
    """The endpoints the target uses, with Ollama's status codes and ``{"error": ...}``."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, str] = {}
        self.creates: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[str, tuple[int, str]] = {}  # path -> (status, error text)
        self.version_status = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _handle(self) -> None:
                fake.calls.append((self.command, self.path))
                raw = self._body()
                if self.path in fake.fail:
                    status, error = fake.fail[self.path]
                    return self._send(status, {"error": error})
                route = (self.command, self.path.split("/sha256:")[0])
                if route == ("GET", "/api/version"):
                    if fake.version_status != 200:
                        return self._send(fake.version_status, {"error": "not found"})
                    return self._send(200, {"version": "0.0.0-fake"})
                if route == ("GET", "/api/tags"):
                    models = [{"name": n, "model": n, "digest": d} for n, d in fake.models.items()]
                    return self._send(200, {"models": models})
                if route[1] == "/api/blobs":
                    digest = self.path.split("sha256:")[1]
                    if self.command == "HEAD":
                        return self._send(200 if digest in fake.blobs else 404)
                    if hashlib.sha256(raw).hexdigest() != digest:
                        return self._send(400, {"error": "digest mismatch"})
                    fake.blobs[digest] = raw
                    return self._send(201)
                body = json.loads(raw or b"{}")
                if route == ("POST", "/api/create"):
                    fake.creates.append(body)
                    for ref in body.get("files", {}).values():
                        if ref.removeprefix("sha256:") not in fake.blobs:
                            return self._send(400, {"error": f"blob {ref} not found"})
                    config = {k: v for k, v in body.items() if k not in ("model", "stream")}
                    manifest = json.dumps(config, sort_keys=True).encode()
                    fake.models[body["model"]] = hashlib.sha256(manifest).hexdigest()
                    return self._send(200, {"status": "success"})
                if route == ("POST", "/api/copy"):
                    if body["source"] not in fake.models:
                        return self._send(404, {"error": f"model '{body['source']}' not found"})
                    fake.models[body["destination"]] = fake.models[body["source"]]
                    return self._send(200)
                if route == ("DELETE", "/api/delete"):
                    if fake.models.pop(body["model"], None) is None:
                        return self._send(404, {"error": "model not found"})
                    return self._send(200)
                return self._send(404, {"error": f"no route {self.command} {self.path}"})

            do_GET = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"

    def sent(self, method: str, prefix: str) -> list[str]:
        return [path for m, path in self.calls if m == method and path.startswith(prefix)]


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    thread = threading.Thread(
        target=fake.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _export(folder: Path, payload: bytes) -> dict[str, Path]:
    """What ``hwkit export ollama`` leaves: a GGUF and a Modelfile beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.gguf").write_bytes(b"GGUF" + payload)
    (folder / "Modelfile").write_text(MODELFILE, encoding="utf-8")
    return {"gguf": folder / "model.gguf", "modelfile": folder / "Modelfile"}


def test_deploy_uploads_the_blob_once_and_keeps_prev(ollama: FakeOllama, tmp_path: Path) -> None:
    target = OllamaTarget(host=ollama.host)
    artifacts = _export(tmp_path / "v1", b"\x00\x01")
    first = target.deploy("manual-bot", 1, artifacts)

    assert len(ollama.sent("POST", "/api/blobs/")) == 1
    [create] = ollama.creates
    digest = hashlib.sha256((tmp_path / "v1" / "model.gguf").read_bytes()).hexdigest()
    assert create["model"] == "manual-bot:latest" and create["stream"] is False
    assert create["files"] == {"model.gguf": f"sha256:{digest}"}
    assert create["template"].startswith("{{- range .Messages }}<|im_start|>")
    assert create["parameters"] == {
        "stop": ["<|im_start|>", "<|im_end|>"],
        "temperature": 0.7,
        "num_ctx": 4096,
    }
    assert create["system"] == "You answer from the manual."
    assert first.endpoint == f"{ollama.host}/v1" and first.model == "manual-bot:latest"
    assert first.details["prev"] is None and first.details["blob"] == f"sha256:{digest}"
    assert ollama.models["manual-bot:v1"] == ollama.models["manual-bot:latest"]

    second = target.deploy("manual-bot", 2, artifacts)  # same GGUF: HEAD finds the blob
    assert len(ollama.sent("POST", "/api/blobs/")) == 1
    assert len(ollama.sent("HEAD", "/api/blobs/")) == 2
    assert second.details["prev"] == "manual-bot:prev"
    assert ollama.models["manual-bot:prev"] == first.details["digest"]
    assert Deployment.from_dict(json.loads(json.dumps(second.to_dict()))) == second


def test_rollback_restores_the_previous_digest(ollama: FakeOllama, tmp_path: Path) -> None:
    target = OllamaTarget(host=ollama.host)
    v1 = target.deploy("bot", 1, _export(tmp_path / "v1", b"one"))
    v2 = target.deploy("bot", 2, _export(tmp_path / "v2", b"two"))
    assert v1.details["digest"] != v2.details["digest"]
    current = target.current("bot")
    assert current is not None and current.version == 2

    restored = target.rollback("bot", v1)
    assert restored is not None and restored.version == 1
    assert ollama.models["bot:latest"] == v1.details["digest"]
    assert restored.details["restored_from"] == "bot:v1"
    current = target.current("bot")
    assert current is not None and (current.version, current.model) == (1, "bot:latest")
    assert current.details["digest"] == v1.details["digest"]


def test_rollback_falls_back_to_prev_and_none_takes_the_model_out(
    ollama: FakeOllama, tmp_path: Path
) -> None:
    target = OllamaTarget(host=ollama.host)
    v1 = target.deploy("bot", 1, _export(tmp_path / "v1", b"one"))
    target.deploy("bot", 2, _export(tmp_path / "v2", b"two"))
    del ollama.models["bot:v1"]  # someone removed the version tag: NAME:prev still has it
    restored = target.rollback("bot", v1)
    assert restored is not None and restored.details["restored_from"] == "bot:prev"
    assert ollama.models["bot:latest"] == v1.details["digest"]

    assert target.rollback("bot", None) is None
    assert "bot:latest" not in ollama.models and "bot:v2" in ollama.models
    assert target.current("bot") is None

    del ollama.models["bot:prev"]
    with pytest.raises(NotFoundError, match="neither bot:v1 nor bot:prev"):
        target.rollback("bot", v1)


def test_current_reports_the_version_tag_sharing_the_digest(
    ollama: FakeOllama, tmp_path: Path
) -> None:
    target = OllamaTarget(host=ollama.host)
    assert target.current("bot") is None
    target.deploy("bot", 7, _export(tmp_path / "v7", b"seven"))
    current = target.current("bot")
    assert current is not None
    assert (current.target, current.name, current.version) == ("ollama", "bot", 7)
    assert current.endpoint == f"{ollama.host}/v1" and current.details["tag"] == "bot:v7"
    ollama.models["bot:latest"] = "0" * 64  # replaced outside hwkit: no tag matches
    current = target.current("bot")
    assert current is not None and current.version == 0 and current.details["tag"] is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host_raises_before_anything_is_sent(tmp_path: Path) -> None:
    host = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(UnavailableError) as info:
        OllamaTarget(host=host).deploy("bot", 1, _export(tmp_path, b"x"))
    line = str(info.value)
    assert line == (
        f"Ollama is not reachable at {host} (start it with `ollama serve` or set OLLAMA_HOST)"
    )


def test_a_server_that_is_not_ollama_fails_check_and_nothing_changes(
    ollama: FakeOllama, tmp_path: Path
) -> None:
    ollama.version_status = 404
    with pytest.raises(UnavailableError, match="is not an Ollama server"):
        OllamaTarget(host=ollama.host).deploy("bot", 1, _export(tmp_path, b"x"))
    assert ollama.calls == [("GET", "/api/version")]


def test_http_500_from_create_is_one_line_naming_the_call(
    ollama: FakeOllama, tmp_path: Path
) -> None:
    ollama.fail["/api/create"] = (500, "llama runner process has terminated:\nexit status 2")
    with pytest.raises(DeployError) as info:
        OllamaTarget(host=ollama.host).deploy("bot", 1, _export(tmp_path, b"x"))
    line = str(info.value)
    assert "\n" not in line
    assert "POST /api/create" in line and "HTTP 500" in line
    assert "llama runner process has terminated: exit status 2" in line
    assert "bot:v1" not in ollama.models  # nothing tagged after a failed create


def test_host_from_option_env_or_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert OllamaTarget().host == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    assert OllamaTarget().host == "http://0.0.0.0:11434"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:8080")
    assert OllamaTarget().endpoint == "http://gpu-box:8080/v1"
    assert OllamaTarget(host="https://ollama.internal/").host == "https://ollama.internal:11434"
    with pytest.raises(ConfigError, match="unknown option"):
        OllamaTarget(hots="x")


def test_bad_inputs_are_refused_before_any_call(ollama: FakeOllama, tmp_path: Path) -> None:
    target = OllamaTarget(host=ollama.host)
    artifacts = _export(tmp_path, b"x")
    with pytest.raises(ConfigError, match="without a tag"):
        target.deploy("bot:latest", 1, artifacts)
    with pytest.raises(ConfigError, match="no GGUF"):
        target.deploy("bot", 1, {"model_dir": tmp_path})
    with pytest.raises(ConfigError, match=r"Modelfile .* does not exist"):
        target.deploy("bot", 1, {**artifacts, "modelfile": tmp_path / "missing" / "Modelfile"})
    (tmp_path / "Modelfile").write_text("FROM ./model.gguf\nADAPTER ./lora.gguf\n")
    with pytest.raises(ConfigError, match="instruction ADAPTER"):
        target.deploy("bot", 1, artifacts)
    assert ollama.calls == []


def test_the_gguf_comes_from_the_modelfile_when_not_given(
    ollama: FakeOllama, tmp_path: Path
) -> None:
    artifacts = _export(tmp_path, b"x")
    OllamaTarget(host=ollama.host).deploy("bot", 1, {"modelfile": artifacts["modelfile"]})
    assert list(ollama.creates[0]["files"]) == ["model.gguf"]


def test_parses_the_modelfile_hwkit_exports(tmp_path: Path) -> None:
    path = tmp_path / "Modelfile"
    text = build_modelfile(
        gguf_name="m.gguf", family=CHATML, system='Say "hi".\nTwo lines.', num_ctx=2048
    )
    path.write_text(text, encoding="utf-8")
    fields = parse_modelfile(path)
    assert fields["from"] == "./m.gguf"
    assert fields["template"] == CHATML.template
    assert fields["system"] == 'Say "hi".\nTwo lines.'
    assert fields["parameters"] == {
        "stop": list(CHATML.stop),
        "temperature": 0.7,
        "num_ctx": 2048,
    }
