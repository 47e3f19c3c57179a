"""The profile-scorer case end to end (issue 13): scored profiles in a real PostgreSQL
server, SmolLM2-135M-Instruct trained 2 steps at 64 tokens, a q4_k_m GGUF registered and
served by a real ``hwkit serve -m profile-scorer=registry:profile-scorer`` subprocess, the
held-out profiles verified through that server's OpenAI endpoint.

Run 1 (module fixture) makes v1 the champion. Run 2 is a deliberately broken model (the
labels shuffled so each profile carries another's score and reason, and a destructive
learning rate): its held-out loss is worse than the champion's, so the ``eval_loss`` gate
fails (exit 9), nothing is registered or deployed, and the server still answers with v1.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hwkit.plugin_manager import PluginManager
from hwkit.plugins.pipeline.registry import ModelRegistry
from hwkit.plugins.pipeline.runner import Outcome, read_state, run_pipeline
from hwkit.plugins.pipeline.stages import EXIT_GATE_FAILED, GateFailed
from hwkit.runtime import Runtime
from tests.pg_fixture import PgServer, postgres_server  # noqa: F401
from tests.plugins.pipeline.test_pipeline_run import INSTRUCTION  # the team's instruction
from tests.plugins.serving.live_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

pytest.importorskip("psycopg")
pytest.importorskip("llama_cpp")

NAME = "profile-scorer"
DATABASE = "hwkit_profile_scorer"
SERVER_START_S = 120.0
COLUMNS = "username AS handle, display_name, bio, created_at, follower_count, location, scored_by"

PIPELINE = '''
name = "profile-scorer"

[data]
source = "{url}"
query = "SELECT {columns}, score, reason FROM {table} ORDER BY twitter_id"
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
learning_rate = {learning_rate}
save_steps = 2
save_total_limit = 1
eval = {{ max_rows = 2, samples = 0 }}

[evaluate]
task = "json-score"
positives = {{ field = "score", min = 0.8 }}  # known researcher profiles
limit = 4
max_new_tokens = 12
context = 512

[[gate]]
metric = "json_valid_rate"
threshold = 0.0

[[gate]]
metric = "eval_loss"
greater_is_better = false
min_absolute_change = 0.0  # no worse than the champion's held-out loss

[export]
format = "gguf"
quantization = "q4_k_m"
verify = false  # the exporter's own check; tests/plugins/exporters covers it

[deploy]
target = "serve"
options = {{ url = "{server}", registry = "{registry}", timeout = 120 }}

[verify]
limit = 4
timeout_s = 60

[[verify.gate]]
metric = "json_valid_rate"
threshold = 0.0
'''


# -- the data: 40 scored profiles in PostgreSQL --------------------------------------------------
def read_profiles(shared_data: Path) -> list[dict[str, str]]:
    with (shared_data / "profiles" / "profiles.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def pick(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """20 known researchers (score >= 0.8) and 20 others, so held-out cases include both."""
    researchers = [r for r in rows if float(r["score"]) >= 0.8][:20]
    others = [r for r in rows if float(r["score"]) < 0.8][:20]
    return sorted(researchers + others, key=lambda r: int(r["twitter_id"]))


def load_tables(pg: PgServer, rows: list[dict[str, str]]) -> str:
    """``scored_profiles`` (the rows as scored) and ``shuffled_profiles`` (each profile with
    the score and reason of the row 20 places on: researchers get others' labels and the
    other way round). Returns the database's URL."""
    with pg.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    labels = [(r["score"], r["reason"]) for r in rows]
    shuffled = labels[20:] + labels[:20]
    with pg.connect(DATABASE) as conn, conn.cursor() as cur:
        for table, pairs in (("scored_profiles", labels), ("shuffled_profiles", shuffled)):
            cur.execute(
                f"CREATE TABLE {table} (twitter_id bigint PRIMARY KEY, username text NOT NULL, "
                "display_name text, bio text, created_at date, follower_count integer, "
                "following_count integer, location text, score numeric(3, 2) NOT NULL, "
                "reason text NOT NULL, scored_by text)"
            )
            cur.executemany(
                f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        int(r["twitter_id"]),
                        r["username"],
                        r["display_name"],
                        r["bio"],
                        r["created_at"],
                        int(r["follower_count"]),
                        int(r["following_count"]),
                        r["location"],
                        score,
                        reason,
                        r["scored_by"],
                    )
                    for r, (score, reason) in zip(rows, pairs, strict=True)
                ],
            )
    return pg.url(DATABASE)


# -- the server: hwkit serve as a user starts it -------------------------------------------------
def http(
    method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 60
) -> tuple[int, Any]:
    """(status, parsed JSON) without a proxy from the environment."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def health(self) -> dict[str, Any]:
        status, body = http("GET", self.url + "/health", timeout=10)
        assert status == 200, (status, body, self.tail())
        assert isinstance(body, dict)
        return body

    def serving(self) -> int | None:
        placed = (self.health().get("placements") or {}).get(NAME) or {}
        version = placed.get("registry_version")
        return None if version is None else int(version)

    def chat(self, prompt: str) -> tuple[int, Any]:
        body = {
            "model": NAME,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 12,
            "temperature": 0,
        }
        return http("POST", self.url + "/v1/chat/completions", body, timeout=120)


def start_server(registry: Path, log: Path) -> Server:
    """``hwkit serve`` on a free loopback port, following ``NAME`` in ``registry`` before
    it has a champion; returns once ``/health`` answers."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("HWKIT_PROFILE", "HWKIT_DISABLE_PLUGINS")
    }
    args = [sys.executable, "-m", "hwkit", "serve", "-m", f"{NAME}=registry:{NAME}"]
    args += ["--registry", str(registry), "--port", str(port), "--context", "512"]
    args += ["--max-tokens", "64"]
    with log.open("wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"hwkit serve exited with {proc.returncode}:\n{server.tail()}")
        try:
            status, _ = http("GET", server.url + "/health", timeout=2)
            if status == 200:
                return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            stop(server)
            raise AssertionError(
                f"hwkit serve did not answer in {SERVER_START_S:g} s:\n{server.tail()}"
            )
        time.sleep(0.5)


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=20)


# -- the first run, shared -----------------------------------------------------------------------
@dataclass
class World:
    folder: Path
    url: str
    registry: ModelRegistry
    runtime: Runtime
    server: Server
    first: Path
    outcome: Outcome
    served_before_run: int | None
    held_out_prompt: str


def write_pipeline(world_folder: Path, name: str, **values: Any) -> Path:
    path = world_folder / name
    path.write_text(PIPELINE.format(template=INSTRUCTION, columns=COLUMNS, **values))
    return path


def prompt_for(row: dict[str, str]) -> str:
    return INSTRUCTION.format(handle=row["username"], **row)


@pytest.fixture(scope="module")
def world(
    shared_data: Path,
    postgres_server: PgServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("profile-scorer")
    rows = read_profiles(shared_data)
    chosen = pick(rows)
    url = load_tables(postgres_server, chosen)
    taken = {r["username"] for r in chosen}
    held_out = next(r for r in rows if r["username"] not in taken and float(r["score"]) >= 0.8)
    registry = ModelRegistry(folder / "registry")
    runtime = Runtime(PluginManager().load_entry_points())
    server = start_server(registry.root, folder / "serve.log")
    try:
        before = server.serving()
        pipeline = write_pipeline(
            folder,
            "pipeline.toml",
            url=url,
            table="scored_profiles",
            learning_rate="1e-3",
            server=server.url,
            registry=registry.root,
        )
        first = folder / "run-1"
        outcome = run_pipeline(pipeline, first, registry=registry.root, runtime=runtime)
        yield World(
            folder, url, registry, runtime, server, first, outcome, before, prompt_for(held_out)
        )
    finally:
        stop(server)


def champion(world: World) -> int | None:
    found = world.registry.champion(NAME)
    return None if found is None else found.version


def test_first_run_trains_from_postgres_and_the_server_serves_v1(world: World) -> None:
    assert world.served_before_run is None  # the server was up before any champion existed
    assert world.outcome.status == "succeeded", world.outcome
    state = read_state(world.first)
    assert state["outcome"] == "succeeded"
    # the serve target made v1 the champion while deploying; promote says what was before
    promoted = json.loads((world.first / "promote" / "promote.json").read_text())
    assert promoted == {"champion": 1, "previous": "none"}
    assert all(r["status"] == "done" for r in state["stages"].values())
    data = state["stages"]["data"]
    assert data["metrics"]["rows_in"] == 40 and data["info"]["source"].startswith("postgresql://")
    # the rows came from PostgreSQL typed: the score is a JSON number, the date a date
    first_row = json.loads(
        (world.first / "train" / "run" / "train.jsonl").read_text().split("\n")[0]
    )
    user, reply = first_row["messages"][-2]["content"], first_row["messages"][-1]["content"]
    answer = json.loads(reply)
    assert set(answer) == {"handle", "score", "reason"} and isinstance(answer["score"], float)
    assert f"handle: {answer['handle']}" in user and "created_at: 20" in user
    assert state["stages"]["train"]["metrics"]["eval_loss"] > 0

    version = world.registry.get(NAME, 1)
    assert version.artifacts["gguf"] == f"{NAME}-q4_k_m.gguf"
    assert version.metrics["eval_loss"] == state["stages"]["train"]["metrics"]["eval_loss"]
    assert champion(world) == 1 and world.outcome.champion == 1
    gate = json.loads((world.first / "gate" / "gate.json").read_text())
    assert [c["metric"] for c in gate["checks"]] == ["json_valid_rate", "eval_loss"]
    assert gate["checks"][1]["skipped"] is True  # no champion to compare with yet

    deployment = json.loads((world.first / "deploy" / "deployment.json").read_text())
    assert deployment["target"] == "serve" and deployment["version"] == 1
    assert deployment["endpoint"] == world.server.url + "/v1"
    assert world.server.serving() == 1
    status, body = world.server.chat(world.held_out_prompt)
    assert status == 200, body
    assert body["model"] == NAME and body["choices"][0]["message"]["content"].strip()


def test_verify_measured_the_served_model(world: World) -> None:
    state = read_state(world.first)
    metrics = state["stages"]["verify"]["metrics"]
    print("verify metrics:", json.dumps(metrics))
    assert metrics["cases"] == 4
    assert 0.0 <= metrics["json_valid_rate"] <= 1.0
    assert 0 <= metrics["json_scored"] <= 4
    assert metrics["latency_p95_s"] >= metrics["latency_p50_s"] > 0
    expected = {"pearson", "spearman", "positives", "positives_mean", "positives_min"}
    assert expected <= set(metrics)
    for key in ("pearson", "spearman"):  # None below 3 scored cases or without spread
        assert metrics[key] is None or -1.0 <= metrics[key] <= 1.0
    assert metrics["positives"] >= 1  # pick() put researchers among the held-out rows
    assert 0.0 <= metrics["positives_min"] <= metrics["positives_mean"]
    if metrics["json_scored"] == 0:  # a 2-step model: no reply is a scored JSON object
        assert metrics["pearson"] is None and metrics["spearman"] is None
        assert metrics["positives_mean"] == 0.0  # a positive it cannot score is a miss
    samples = [
        json.loads(line)
        for line in (world.first / "verify" / "samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 4 and all(isinstance(s["after"], str) for s in samples)
    assert all(json.loads(s["reference"])["handle"] for s in samples)


def test_a_broken_model_fails_the_loss_gate_and_v1_keeps_answering(world: World) -> None:
    versions = len(world.registry.versions(NAME))
    pipeline = write_pipeline(
        world.folder,
        "broken.toml",
        url=world.url,
        table="shuffled_profiles",
        learning_rate="1.0",
        server=world.server.url,
        registry=world.registry.root,
    )
    run = world.folder / "run-broken"
    with pytest.raises(GateFailed) as info:
        run_pipeline(pipeline, run, registry=world.registry.root, runtime=world.runtime)
    assert info.value.exit_code == EXIT_GATE_FAILED
    message = info.value.one_line()
    assert "gate failed: eval_loss" in message and "champion v1 stays" in message

    state = read_state(run)
    assert state["outcome"] == "failed" and state["stages"]["gate"]["status"] == "failed"
    assert "export" not in state["stages"] and "deploy" not in state["stages"]
    good = read_state(world.first)["stages"]["train"]["metrics"]["eval_loss"]
    bad = state["stages"]["train"]["metrics"]["eval_loss"]
    print(f"eval_loss: run 1 {good:.4f}, broken run {bad:.4f}")
    assert math.isfinite(bad) and bad > good
    gate = json.loads((run / "gate" / "gate.json").read_text())
    assert gate["passed"] is False and gate["champion"] == 1
    loss = next(c for c in gate["checks"] if c["metric"] == "eval_loss")
    assert loss["passed"] is False and loss["champion"] == good and loss["value"] == bad

    assert champion(world) == 1 and len(world.registry.versions(NAME)) == versions
    assert world.server.serving() == 1
    status, body = world.server.chat(world.held_out_prompt)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"].strip()
