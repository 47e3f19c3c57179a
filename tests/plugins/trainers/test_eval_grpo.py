"""``hwkit eval`` on a ``grpo`` run: the held-out reward (``eval_reward``, ``eval_reward/KEY``)
measured as the trainer measures it, after and (adapter off) before, in ``eval.json``; a run
whose reward is no longer registered fails with the registry's one-line error, and a run of
another trainer gets no reward metrics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from hwkit.errors import ConfigError
from tests.plugins.trainers.test_train_grpo import profile_rows

pytestmark = pytest.mark.slow

REWARDS = [
    {"name": "json_valid", "weight": 1.0},
    {"name": "length", "weight": 1.0, "options": {"max_chars": 12, "slack": 24}},
]
KEYS = ["eval_reward", "eval_reward/json_valid", "eval_reward/length"]


def _train(shared_data: Path, folder: Path) -> None:
    """One GRPO step on SmolLM2 from 6 training and 2 validation prompts (a large learning
    rate, so the adapter changes the greedy completions)."""
    from hwkit.jobs import train
    from hwkit.plugins.data import DataConfig
    from hwkit.plugins.trainers.grpo import GRPOConfig, GRPOTrainerPlugin

    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in profile_rows(shared_data, 8)))
    config = GRPOConfig(
        output_dir=folder / "run",
        data=DataConfig(
            source=str(data),
            validation_fraction=0.25,
            thresholds={
                "min_answers": 1,
                "min_words_per_answer": 0,
                "min_categories": 0,
                "min_total_words": 0,
            },
        ),
        effective_batch=4,
        num_generations=2,
        max_completion_length=8,
        max_seq_len=256,
        lora_rank=4,
        learning_rate=5e-3,
        max_steps=1,
        save_steps=10,
        probe=False,
        eval={"max_rows": 2, "samples": 0},
        reward=REWARDS,
    )
    assert train(GRPOTrainerPlugin(), config).steps == 1


@pytest.fixture(scope="module")
def grpo_run(shared_data: Path) -> Path:
    """The trained run directory, built once per version of the trainers (read-only)."""
    import hwkit.plugins.trainers.grpo as grpo
    from tests.fixture_cache import built_once, package_files

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("HWKIT_PROFILE", raising=False)
        mp.delenv("HWKIT_DISABLE_PLUGINS", raising=False)
        folder = built_once(
            "tiny-grpo-run",
            [*package_files(grpo), Path(__file__)],
            lambda out: _train(shared_data, out),
        )
    return folder / "run"


@pytest.fixture
def run_copy(grpo_run: Path, tmp_path: Path) -> Path:
    """A writable copy of the run (eval.json goes into it), without its checkpoints."""
    return Path(
        shutil.copytree(grpo_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    )


def test_eval_reports_the_held_out_reward_the_trainer_reported(
    run_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hwkit.plugins.trainers.cli import print_eval
    from hwkit.plugins.trainers.evaluate import evaluate_run

    result = evaluate_run(run_copy)
    metrics = result["metrics"]
    assert json.loads((run_copy / "eval.json").read_text())["metrics"] == metrics
    report = json.loads((run_copy / "report.json").read_text())
    for prefix, phase in (("", "eval_after"), ("base_", "eval_before")):
        for key in KEYS:
            value = metrics[prefix + key]
            assert isinstance(value, float) and math.isfinite(value), (prefix + key, value)
            assert 0.0 <= value <= 1.0, (prefix + key, value)
            # the same greedy decoding of the same rows at the same length, by the same
            # held_out_reward with the composite fitted on the same training prompts: the
            # trainer's figure (its "before" is the fresh adapter, here the adapter is off)
            assert value == pytest.approx(report[phase][key], abs=1e-9), (prefix + key, phase)
    assert report["eval_after"]["eval_rows"] == metrics["validation_rows"] == 2
    print_eval(result)
    shown = capsys.readouterr().out
    assert "base_eval_reward/length" in shown and "eval_reward/json_valid" in shown


def test_a_reward_no_longer_registered_is_one_line(run_copy: Path) -> None:
    import tomli_w
    import tomllib

    from hwkit.plugins.trainers.evaluate import evaluate_run

    config = tomllib.loads((run_copy / "config.toml").read_text())
    config["reward"][1]["name"] = "gone"
    (run_copy / "config.toml").write_text(tomli_w.dumps(config))
    with pytest.raises(
        ConfigError, match=r"unknown reward 'gone'; registered: .*json_valid"
    ) as err:
        evaluate_run(run_copy)
    assert "\n" not in str(err.value) and "length" in err.value.message
    assert not (run_copy / "eval.json").exists()


def test_a_run_of_another_trainer_gets_no_reward(run_copy: Path) -> None:
    from hwkit.plugins.trainers.evaluate import evaluate_run

    report = json.loads((run_copy / "report.json").read_text())
    (run_copy / "report.json").write_text(json.dumps({**report, "trainer": "sft"}))
    metrics = evaluate_run(run_copy, samples=0)["metrics"]
    assert math.isfinite(metrics["eval_loss"]) and math.isfinite(metrics["base_eval_loss"])
    assert not [k for k in metrics if "eval_reward" in k]
