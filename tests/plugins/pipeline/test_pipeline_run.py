"""``hwkit pipeline run`` end to end on a real tiny run: 40 profile rows (../shared/data),
SmolLM2-135M trained 2 steps at 64 tokens, 4 held-out cases, a q8_0 GGUF, a registry and a
deploy target that serves the GGUF in-process over the OpenAI chat API.

The first run is made once (module fixture); the others copy its run directory and change
one thing, so the data and train stages are kept and nothing is trained twice.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hwkit.cli import app  # builds the CLI (and its runtime) before cli_runtime replaces it
from hwkit.deploy import Deployment, DeployTarget
from hwkit.hookspecs import Register, hookimpl
from hwkit.plugin_manager import PluginManager
from hwkit.plugins.pipeline.registry import ModelRegistry
from hwkit.plugins.pipeline.runner import read_state, run_pipeline
from hwkit.plugins.pipeline.stages import EXIT_GATE_FAILED, EXIT_ROLLED_BACK
from hwkit.runtime import Runtime, set_current

pytestmark = pytest.mark.slow

runner = CliRunner()

INSTRUCTION = """Score this profile. Given the following profile attributes, return a JSON \
object with: 'handle', 'score' (0.00-1.00 likelihood of being a real person who is an \
academic researcher), 'reason'.

PROFILE ATTRIBUTES:
handle: {handle}
displayName: {display_name}
bio: {bio}
created_at: {created_at}
followerCount: {follower_count}
location: {location}
(Scored by model: {scored_by})"""

PIPELINE = '''
name = "profile-scorer"

[data]
source = "profiles.jsonl"
template = """{template}"""
mapping = {{ target = ["handle", "score", "reason"] }}
validation_fraction = 0.1

[data.thresholds]
min_answers = 20
min_words_per_answer = 3
min_categories = 0
min_total_words = 0

[train]
max_steps = 2
max_seq_len = 64
effective_batch = 2
learning_rate = 1e-3
save_steps = 2
save_total_limit = 1
eval = {{ max_rows = 2, samples = 0 }}

[evaluate]
task = "json-score"
positives = {{ field = "score", min = 0.8 }}
limit = 4
max_new_tokens = 12
context = 512

[[gate]]
metric = "json_valid_rate"
threshold = {gate}

[export]
format = "gguf"
quantization = "q8_0"
verify = false  # the exporter's own check; tests/plugins/exporters covers it

[deploy]
target = "in-process"

[verify]
limit = 4
timeout_s = 60

[[verify.gate]]
metric = "json_valid_rate"
threshold = {verify_gate}
'''


# -- a deploy target for the test: serves GGUFs in this process over HTTP ------------------------
class _Server:
    """One OpenAI-compatible /v1/chat/completions server for every target instance (the
    pipeline builds a target per stage): model name -> (version, generator)."""

    def __init__(self) -> None:
        self.serving: dict[str, tuple[int, Any]] = {}
        self.files: dict[tuple[str, int], Path] = {}
        self.log: list[tuple[str, str, int | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                from hwkit.inference import GenerationParams

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                _, generator = server.serving[body["model"]]
                tokens = int(body.get("max_tokens", 16))
                prompt = generator.prompt(body["messages"], tokens)
                text = generator.generate(prompt, GenerationParams(max_new_tokens=tokens)).text
                answer = {
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                }
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def load(self, name: str, version: int) -> None:
        from hwkit.jobs import load_generator

        generator = load_generator(self.files[(name, version)], context=512)
        old = self.serving.get(name)
        self.serving[name] = (version, generator)
        if old is not None:
            old[1].close()

    def close(self) -> None:
        self.http.shutdown()
        for _, generator in self.serving.values():
            generator.close()


SERVER: _Server | None = None


class InProcessTarget(DeployTarget):
    name = "in-process"
    description = "test only: GGUFs served by this process"

    def _deployment(self, name: str, version: int) -> Deployment:
        assert SERVER is not None
        return Deployment(self.name, name, version, SERVER.endpoint, name)

    def deploy(self, name: str, version: int, artifacts: Mapping[str, Path]) -> Deployment:
        assert SERVER is not None
        SERVER.files[(name, version)] = Path(artifacts["gguf"])
        SERVER.load(name, version)
        SERVER.log.append(("deploy", name, version))
        return self._deployment(name, version)

    def rollback(self, name: str, previous: Deployment | None) -> Deployment | None:
        assert SERVER is not None
        SERVER.log.append(("rollback", name, None if previous is None else previous.version))
        if previous is None:
            SERVER.serving.pop(name)[1].close()
            return None
        SERVER.load(name, previous.version)
        return self._deployment(name, previous.version)

    def current(self, name: str) -> Deployment | None:
        assert SERVER is not None
        if name not in SERVER.serving:
            return None
        return self._deployment(name, SERVER.serving[name][0])


class _TargetPlugin:
    @hookimpl
    def hwkit_register_deploy_targets(self, register: Register[type[DeployTarget]]) -> None:
        register(InProcessTarget)


# -- the shared first run ------------------------------------------------------------------------
def profile_rows(shared_data: Path, n: int) -> list[dict[str, Any]]:
    with (shared_data / "profiles" / "profiles.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    keep = ("display_name", "bio", "created_at", "location", "scored_by", "reason")
    return [
        {
            "handle": r["username"],
            **{k: r[k] for k in keep},
            "follower_count": int(r["follower_count"]),
            "score": float(r["score"]),
        }
        for r in rows
    ]


def write_pipeline(folder: Path, name: str, gate: float = 0.0, verify_gate: float = 0.0) -> Path:
    path = folder / name
    path.write_text(PIPELINE.format(template=INSTRUCTION, gate=gate, verify_gate=verify_gate))
    return path


@dataclass
class World:
    folder: Path
    registry: ModelRegistry
    runtime: Runtime
    pipeline: Path
    first: Path


@pytest.fixture(scope="module")
def world(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    global SERVER
    folder = tmp_path_factory.mktemp("pipeline")
    with (folder / "profiles.jsonl").open("w", encoding="utf-8") as fh:
        for row in profile_rows(shared_data, 40):
            fh.write(json.dumps(row) + "\n")
    plugins = PluginManager().load_entry_points()
    plugins.register_plugin(_TargetPlugin(), "pipeline-test-target")
    runtime = Runtime(plugins)
    SERVER = _Server()
    registry = ModelRegistry(folder / "registry")
    pipeline = write_pipeline(folder, "pipeline.toml")
    first = folder / "run-1"
    try:
        outcome = run_pipeline(pipeline, first, registry=registry.root, runtime=runtime)
        assert outcome.status == "succeeded", outcome
        yield World(folder, registry, runtime, pipeline, first)
    finally:
        SERVER.close()
        SERVER = None


@pytest.fixture
def cli_runtime(world: World) -> Iterator[Runtime]:
    """The CLI's process runtime with the test target, for this test only."""
    set_current(world.runtime)
    yield world.runtime
    set_current(None)


def copy_run(world: World, name: str, keep_through: str | None = None) -> Path:
    """A copy of the first run; with ``keep_through`` the stages after it are forgotten
    (as if the pipeline had been killed there)."""
    run = world.folder / name
    shutil.copytree(world.first, run)
    if keep_through is not None:
        state = json.loads((run / "state.json").read_text())
        names = list(state["stages"])
        killed, *later = names[names.index(keep_through) + 1 :]
        state["stages"][killed] = {"status": "started", "started": "killed here"}
        for stage in later:
            del state["stages"][stage]
        (run / "state.json").write_text(json.dumps(state))
    return run


def champion(world: World) -> int | None:
    found = world.registry.champion("profile-scorer")
    return None if found is None else found.version


def test_first_run_trains_gates_deploys_and_promotes(world: World) -> None:
    run = world.first
    state = read_state(run)
    assert state["outcome"] == "succeeded"
    expected = ["data", "validate", "train", "evaluate", "gate", "export", "register"]
    expected += ["deploy", "verify", "promote"]
    assert list(state["stages"]) == expected
    assert all(r["status"] == "done" and r["seconds"] >= 0 for r in state["stages"].values())
    assert (run / "pipeline.toml").read_text() == world.pipeline.read_text()
    assert state["stages"]["data"]["metrics"]["rows_in"] == 40
    assert (run / "data" / "rejects.jsonl").is_file()
    assert (run / "train" / "run" / "adapter_model.safetensors").is_file()
    evaluate = state["stages"]["evaluate"]["metrics"]
    assert evaluate["cases"] == 4 and 0.0 <= evaluate["json_valid_rate"] <= 1.0
    assert evaluate["latency_p95_s"] >= evaluate["latency_p50_s"] > 0
    assert {"pearson", "spearman", "positives_mean", "positives_min"} <= set(evaluate)
    gate = json.loads((run / "gate" / "gate.json").read_text())
    assert gate["passed"] and gate["checks"][0]["metric"] == "json_valid_rate"

    version = world.registry.get(
        "profile-scorer", state["stages"]["register"]["metrics"]["version"]
    )
    assert set(version.artifacts) == {"gguf", "modelfile", "run"}
    assert version.artifacts["gguf"] == "profile-scorer-q8_0.gguf"
    stored_run = world.registry.artifact_path("profile-scorer", version, "run")
    assert (stored_run / "report.json").is_file() and not (stored_run / "checkpoints").exists()
    assert version.tags["rows"] == "40" and version.metrics["cases"] == 4.0

    deployment = json.loads((run / "deploy" / "deployment.json").read_text())
    assert deployment["version"] == version.version and deployment["target"] == "in-process"
    assert state["stages"]["verify"]["metrics"]["cases"] == 4
    assert champion(world) == version.version
    assert SERVER is not None and SERVER.serving["profile-scorer"][0] == version.version


def test_status_of_the_first_run(world: World) -> None:
    res = runner.invoke(app, ["pipeline", "status", str(world.first)])
    assert res.exit_code == 0, res.output
    assert "gate: passed (1 checks)" in res.stdout and "outcome: succeeded" in res.stdout
    assert "deployment: v" in res.stdout and "on in-process" in res.stdout


def test_a_failed_gate_stops_and_leaves_the_champion(world: World, cli_runtime: Runtime) -> None:
    before, versions = champion(world), len(world.registry.versions("profile-scorer"))
    assert SERVER is not None
    log_before = list(SERVER.log)
    run = copy_run(world, "run-gate")
    pipeline = write_pipeline(world.folder, "strict.toml", gate=1.01)
    res = runner.invoke(
        app,
        [
            "pipeline",
            "run",
            str(pipeline),
            "--out",
            str(run),
            "--registry",
            str(world.registry.root),
        ],
    )
    error = res.exception
    assert getattr(error, "exit_code", None) == EXIT_GATE_FAILED, (res.output, repr(error))
    assert "gate failed: json_valid_rate" in str(error) and "< 1.01 (threshold)" in str(error)
    assert "data: done earlier, kept" in res.stdout and "train: done earlier, kept" in res.stdout
    state = read_state(run)
    assert state["stages"]["gate"]["status"] == "failed" and state["outcome"] == "failed"
    assert "export" not in state["stages"]
    gate = json.loads((run / "gate" / "gate.json").read_text())
    assert gate["passed"] is False and gate["checks"][0]["bound"] == 1.01
    assert gate["champion"] == before
    assert champion(world) == before and len(world.registry.versions("profile-scorer")) == versions
    assert SERVER.log == log_before  # nothing deployed, nothing rolled back


def test_a_failed_verification_rolls_back(world: World) -> None:
    before = champion(world)
    run = copy_run(world, "run-verify", keep_through="export")
    pipeline = write_pipeline(world.folder, "verify-strict.toml", verify_gate=1.01)
    from hwkit.plugins.pipeline.stages import VerifyFailed

    with pytest.raises(VerifyFailed) as info:
        run_pipeline(pipeline, run, registry=world.registry.root, runtime=world.runtime)
    assert info.value.exit_code == EXIT_ROLLED_BACK
    assert f"rolled back to v{before}" in info.value.one_line()
    state = read_state(run)
    candidate = state["stages"]["register"]["metrics"]["version"]
    assert candidate != before and state["stages"]["deploy"]["status"] == "done"
    assert state["stages"]["verify"]["status"] == "failed"
    rollback = json.loads((run / "verify" / "rollback.json").read_text())
    assert rollback["restored"]["version"] == before
    assert champion(world) == before  # never promoted
    assert SERVER is not None and SERVER.serving["profile-scorer"][0] == before
    assert SERVER.log[-2:] == [
        ("deploy", "profile-scorer", candidate),
        ("rollback", "profile-scorer", before),
    ]


def test_resume_keeps_data_and_train(world: World) -> None:
    run = copy_run(world, "run-resume", keep_through="train")
    train_dir = run / "train" / "run"
    stamps = {
        p: p.stat().st_mtime_ns
        for p in (train_dir, run / "data", train_dir / "adapter_model.safetensors")
    }
    lines: list[str] = []
    outcome = run_pipeline(
        world.pipeline,
        run,
        resume=True,
        registry=world.registry.root,
        runtime=world.runtime,
        echo=lines.append,
    )
    assert outcome.status == "succeeded"
    assert lines[:3] == [
        "data: done earlier, kept",
        "validate: done earlier, kept",
        "train: done earlier, kept",
    ]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    state = read_state(run)
    attempts = read_state(world.first)["attempts"]
    assert state["attempts"] == attempts + 1 and state["stages"]["evaluate"]["status"] == "done"
    assert champion(world) == outcome.champion == state["stages"]["register"]["metrics"]["version"]
    # everything is done now: a third call changes nothing
    again = run_pipeline(
        world.pipeline, run, registry=world.registry.root, runtime=world.runtime, echo=lines.append
    )
    assert again.status == "complete" and lines[-1].endswith("every stage is done")
