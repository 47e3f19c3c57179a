"""``hwkit train sft … --nproc 2``: two CPU processes under torchrun, DDP on gloo (tiny run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_process_ddp_run(tmp_path: Path) -> None:
    from hwkit.plugins.data.samples import PERSONA_QUERY, persona_sqlite_path

    db = persona_sqlite_path(tmp_path / "persona.db")
    config = tmp_path / "sft.toml"
    config.write_text(
        f"""
max_seq_len = 48
effective_batch = 2
lora_rank = 4
save_steps = 2

[data]
source = "sqlite:///{db}"
query = "{PERSONA_QUERY}"
validation_fraction = 0.0
""",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HWKIT_LOG_JSON": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "hwkit",
        "train",
        "sft",
        str(config),
        "--nproc",
        "2",
        "--out",
        str(out),
        "--max-steps",
        "2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2
    assert report["steps"] == 2
    # one micro-batch row per process: the effective batch of 2 is split across the ranks
    assert report["plan"]["micro_batch"] * report["plan"]["grad_accum"] == 1
    assert (out / "checkpoints" / "checkpoint-2" / "hwkit-complete.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    assert all(r["step"] <= 2 for r in map(json.loads, (out / "metrics.jsonl").open()))
