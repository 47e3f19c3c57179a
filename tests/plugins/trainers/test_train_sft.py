"""LoRA SFT on the bundled persona sample (real SmolLM2, real data): held-out loss drops,
the run directory holds every artifact, and ``hwkit eval`` reads it back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tomllib

pytestmark = pytest.mark.slow

STEPS = 4


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from hwkit.jobs import train
    from hwkit.plugins.trainers.config import EvalSettings, SFTConfig
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin, persona_data
    from hwkit.runtime import current

    out = tmp_path_factory.mktemp("sft") / "run"
    data = persona_data().model_copy(update={"validation_fraction": 0.1})
    config = SFTConfig(
        output_dir=out,
        data=data,
        max_seq_len=64,
        effective_batch=2,
        max_steps=STEPS,
        learning_rate=2e-3,
        save_steps=2,
        save_total_limit=1,
        eval=EvalSettings(max_rows=3, samples=1, max_new_tokens=8),
    )
    result = train(SFTTrainerPlugin(), config, runtime=current())
    return out, result


def test_lora_sft_lowers_held_out_loss(sft_run: tuple[Path, Any]) -> None:
    out, result = sft_run
    report = json.loads((out / "report.json").read_text())
    before, after = report["eval_before"]["eval_loss"], report["eval_after"]["eval_loss"]
    assert result.steps == STEPS == report["steps"]
    assert after < before - 0.05, (before, after)


def test_run_directory_artifacts(sft_run: tuple[Path, Any]) -> None:
    out, _ = sft_run
    for name in (
        "plan.json",
        "config.toml",
        "metrics.jsonl",
        "loss.png",
        "rejects.jsonl",
        "report.json",
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "train.jsonl",
        "validation.jsonl",
    ):
        assert (out / name).is_file(), name
    # safetensors only: no pickled weights or training args next to the adapter
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    plan = json.loads((out / "plan.json").read_text())
    assert plan["job"] == "sft" and plan["reasons"]["micro_batch"]
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["lora_rank"] >= 1 and config["max_seq_len"] == 64  # resolved, not None
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in train_rows)
    assert all("learning_rate" in r and r["memory_total"] > 0 for r in train_rows)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # only the newest complete checkpoint is kept, and it carries the completeness marker
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == [f"checkpoint-{STEPS}"]
    assert (checkpoints[0] / "hwkit-complete.json").is_file()


def test_eval_reads_the_run_back(sft_run: tuple[Path, Any]) -> None:
    from hwkit.plugins.trainers.evaluate import evaluate_run

    out, _ = sft_run
    result = evaluate_run(out, samples=1, max_new_tokens=8)
    metrics = result["metrics"]
    assert metrics["eval_loss"] < metrics["base_eval_loss"]
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["eval_loss"], rel=1e-6)
    sample = result["samples"][0]
    assert sample["before"] and sample["after"] and sample["reference"]
    assert json.loads((out / "eval.json").read_text())["metrics"] == metrics


@pytest.mark.parametrize(("profile", "device", "dtype"), [("rtx5090", "cuda:0", "bfloat16")])
def test_eval_runs_on_the_planned_device(
    sft_run: tuple[Path, Any], profile: str, device: str, dtype: str
) -> None:
    """With an RTX 5090 (the mock device standing in), evaluation loads the model there in
    bf16 instead of float32 on the CPU."""
    from hwkit.plugins.trainers.evaluate import evaluate_run
    from hwkit.testing import mock_runtime

    out, _ = sft_run
    runtime = mock_runtime(profile)
    result = evaluate_run(out, samples=1, max_new_tokens=4, runtime=runtime)
    assert (result["device"], result["dtype"]) == (device, dtype)
    assert runtime.device(device).forwards > 0  # the forward passes ran on the mock device
    assert result["samples"][0]["after"]


def test_sft_datasets_leave_out_the_columns_kept_for_rewards(tmp_path: Path) -> None:
    from hwkit.plugins.trainers.sft import SFTConfig, SFTTrainerPlugin

    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    rows = [{"messages": msgs, "columns": {"score": 0.5}}] * 2
    trainer = SFTTrainerPlugin(SFTConfig(output_dir=tmp_path))
    train, held = trainer._datasets(rows, rows)
    assert train.column_names == ["messages"] and held is not None
    assert held.column_names == ["messages"] and train[0]["messages"] == msgs
