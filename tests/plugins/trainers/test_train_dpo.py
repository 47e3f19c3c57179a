"""LoRA DPO on real Anthropic HH-RLHF pairs (the shortest single-turn ones, for time): the
held-out reward accuracy rises above its starting point and the DPO loss falls."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PAIRS = 32


def _shortest_pairs(shared_data: Path, out: Path) -> Path:
    source = shared_data / "preference" / "hh-rlhf" / "helpful-base_test.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r["chosen"] != r["rejected"] and r["chosen"].count("Human:") == 1]
    rows.sort(key=lambda r: len(r["chosen"]) + len(r["rejected"]))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:PAIRS]), encoding="utf-8")
    return out


def test_dpo_raises_held_out_reward_accuracy(shared_data: Path, tmp_path: Path) -> None:
    from hwkit.jobs import train
    from hwkit.plugins.data import DataConfig
    from hwkit.plugins.trainers.config import DPOConfig, EvalSettings
    from hwkit.plugins.trainers.dpo import DPOTrainerPlugin
    from hwkit.runtime import current

    pairs = _shortest_pairs(shared_data, tmp_path / "pairs.jsonl")
    config = DPOConfig(
        output_dir=tmp_path / "run",
        data=DataConfig(source=str(pairs), kind="preference", validation_fraction=0.25),
        max_seq_len=48,
        effective_batch=4,
        max_steps=5,
        learning_rate=1e-3,
        lora_rank=8,
        save_steps=5,
        eval=EvalSettings(max_rows=8),
    )
    result = train(DPOTrainerPlugin(), config, runtime=current())
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    before, after = report["eval_before"], report["eval_after"]
    assert result.steps == 5
    assert after["eval_rewards/accuracies"] > before["eval_rewards/accuracies"]
    assert after["eval_loss"] < before["eval_loss"]
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["job"] == "dpo"
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
