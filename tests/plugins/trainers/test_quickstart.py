"""The main job (`make demo` runs `hwkit quickstart`): detect, plan, train, evaluate, answer.
One optimizer step here; the run directory holds what the job flow promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_hwkit


@pytest.mark.slow
def test_quickstart_runs_the_whole_job(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_hwkit(
        "quickstart",
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--samples",
        "1",
        "--max-new-tokens",
        "4",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for step in ("1/4 hardware", "2/4 plan + data + train", "3/4 evaluate", "4/4 results"):
        assert step in result.stderr
    for name in ("plan.json", "config.toml", "result.json", "log.jsonl", "eval.json"):
        assert (out / name).is_file(), name
    # float32, or bfloat16 on a CPU with bf16 instructions (AVX512_BF16, AMX)
    dtype = json.loads((out / "plan.json").read_text())["dtype"]
    assert dtype in ("float32", "bfloat16")
    assert f"plan: cpu:0 {dtype}, micro-batch" in result.stderr
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "result.json").read_text())["steps"] == 1
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert "data.prepared" in events and "train.done" in events
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["metrics"]["eval_loss"] < evaluation["metrics"]["base_eval_loss"]
