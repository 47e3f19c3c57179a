"""kill -9 mid-run, then ``--resume``: training continues from the last complete checkpoint
(a torn one is ignored) and the loss curve matches an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

STEPS = 3


def _write_config(path: Path) -> Path:
    from hwkit.plugins.data.samples import PERSONA_QUERY, persona_sqlite_path

    db = persona_sqlite_path(path.parent / "persona.db")
    path.write_text(
        f"""
max_seq_len = 64
effective_batch = 2
max_steps = {STEPS}
save_steps = 1
save_total_limit = 2
learning_rate = 1e-3
lora_rank = 4

[data]
source = "sqlite:///{db}"
query = "{PERSONA_QUERY}"
validation_fraction = 0.0
""",
        encoding="utf-8",
    )
    return path


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    from hwkit.jobs import train
    from hwkit.plugins.trainers.config import SFTConfig, load_config
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin
    from hwkit.runtime import current

    config_path = _write_config(tmp_path / "sft.toml")
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HWKIT_LOG_JSON": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hwkit", "train", "sft", str(config_path), "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = killed / "checkpoints" / "checkpoint-1" / "hwkit-complete.json"
    deadline = time.monotonic() + 900
    while not marker.exists():
        assert proc.poll() is None, "training exited before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 900 s"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "report.json").exists(), "the run finished before it was killed"

    last_complete = max(
        int(p.parent.name.split("-")[1])
        for p in (killed / "checkpoints").glob("checkpoint-*/hwkit-complete.json")
    )
    # A save torn by the kill: the next checkpoint folder, without the completeness marker.
    torn = killed / "checkpoints" / f"checkpoint-{last_complete + 1}"
    torn.mkdir(exist_ok=True)
    (torn / "adapter_model.safetensors").write_bytes(b"\0" * 10)

    runtime = current()
    config = load_config(SFTConfig, config_path, overrides={"output_dir": str(killed)})
    resumed = train(SFTTrainerPlugin(), config, runtime=runtime, resume=True)
    report = json.loads((killed / "report.json").read_text())
    assert resumed.steps == STEPS
    assert report["resumed_from"].endswith(f"checkpoint-{last_complete}")
    # the torn folder was discarded (and, within the run, saved again completely)
    if last_complete + 1 <= STEPS:
        assert (torn / "hwkit-complete.json").is_file()
        assert (torn / "adapter_model.safetensors").stat().st_size > 10
    else:
        assert not torn.exists()

    straight = tmp_path / "straight"
    config = load_config(SFTConfig, config_path, overrides={"output_dir": str(straight)})
    train(SFTTrainerPlugin(), config, runtime=runtime)
    got, want = _losses(killed), _losses(straight)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-3, abs=1e-4), step
