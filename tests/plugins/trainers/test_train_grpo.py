"""The ``grpo`` trainer: prompt rows with their reply as reference, the longest prompt
first, hwkit rewards as trl reward functions, and a real run on SmolLM2 through the job
flow (plan, probe, held-out reward, checkpoints, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import ConfigError
from hwkit.plugin_manager import load_plugins
from hwkit.plugins.data import DataConfig
from hwkit.plugins.rewards.composite import RewardSpec, build_rewards
from hwkit.plugins.trainers.grpo import (
    GRPOConfig,
    GRPOTrainerPlugin,
    longest_first,
    prompt_rows,
    reward_rows,
    trl_reward_funcs,
    trl_rows,
)

ROWS: list[dict[str, Any]] = [
    {
        "messages": [
            {"role": "system", "content": "Score profiles."},
            {"role": "user", "content": "handle: ada"},
            {"role": "assistant", "content": '{"score": 0.9}'},
        ]
    },
    {"messages": [{"role": "user", "content": "a prompt alone"}]},
]


def test_rows_become_prompts_with_their_reply_as_reference() -> None:
    rows = prompt_rows(ROWS)
    assert rows[0] == {"prompt": ROWS[0]["messages"][:2], "reference": '{"score": 0.9}'}
    assert rows[1] == {"prompt": ROWS[1]["messages"], "reference": ""}


def test_kept_source_columns_reach_every_reward_through_trls_dataset() -> None:
    """mapping.keep's columns ride along as one JSON cell in trl's dataset (a column mixing
    numbers, text and empties is still one Arrow type) and come back as the row's keys."""
    from datasets import Dataset

    kept = [
        {**ROWS[0], "columns": {"score": 0.25, "note": "x"}},
        {**ROWS[1], "columns": {"score": None, "note": 3}},
    ]
    rows = prompt_rows(kept)
    assert rows[0]["score"] == 0.25 and rows[1]["note"] == 3
    ds = Dataset.from_list(trl_rows(rows))
    assert set(ds.column_names) == {"prompt", "reference", "hwkit_columns"}
    batch = ds[:]
    back = reward_rows({k: v for k, v in batch.items() if k != "prompt"}, 2)
    assert back == [
        {"reference": '{"score": 0.9}', "score": 0.25, "note": "x"},
        {"reference": "", "score": None, "note": 3},
    ]
    composite = build_rewards(
        [RewardSpec(name="numeric_closeness", options={"field": "score", "reference": "score"})],
        load_plugins(),
    )
    (func,), _ = trl_reward_funcs(composite)
    completions = [[{"role": "assistant", "content": '{"score": 0.5}'}]] * 2
    scores = func(batch["prompt"], completions, **{k: v for k, v in batch.items() if k != "prompt"})
    # row 0 reads its own score column (1 - |0.5 - 0.25|); row 1 has none: the fallback
    assert scores == pytest.approx([0.75, 0.0])
    assert composite.components[0].failures == 1


def test_a_reward_of_the_row_alone_is_flagged_for_grpo(tmp_path: Path, capsys: Any) -> None:
    """A ``columns`` reward gives every completion of a prompt the same value: GRPO's
    group-relative advantage cancels it, and the trainer says so."""
    from hwkit.plugins.rewards.columns import ColumnsReward

    assert not ColumnsReward.reads_completion
    config = GRPOConfig(
        output_dir=tmp_path / "run",
        reward=[
            RewardSpec(name="json_valid"),
            RewardSpec(name="columns", options={"components": [{"column": "score"}]}),
        ],
    )
    trainer = GRPOTrainerPlugin(config)
    trainer.train_rows = [{"prompt": [], "reference": "", "score": v} for v in (0.1, 0.9)]
    trainer.composite_reward()
    assert "grpo.reward_ignores_completion" in capsys.readouterr().err


def test_the_longest_prompt_goes_first_in_a_seeded_order() -> None:
    rows = [{"i": i} for i in range(20)]
    lengths = [5] * 20
    lengths[13] = 99
    order = longest_first(rows, lengths, seed=1)
    assert order[0] == 13 and sorted(order) == list(range(20))
    assert order == longest_first(rows, lengths, seed=1)
    assert order != longest_first(rows, lengths, seed=2)


def test_rewards_become_trl_functions_with_weights_summing_to_one() -> None:
    specs = [
        RewardSpec(name="json_valid", weight=3.0),
        RewardSpec(
            name="numeric_closeness",
            weight=1.0,
            options={"field": "score", "reference": "reference"},
        ),
    ]
    composite = build_rewards(specs, load_plugins())
    funcs, weights = trl_reward_funcs(composite)
    assert [f.__name__ for f in funcs] == ["json_valid", "numeric_closeness"]
    assert weights == [0.75, 0.25]
    prompts = [[{"role": "user", "content": "p"}]] * 3
    completions = [
        [{"role": "assistant", "content": '{"score": 0.7}'}],
        [{"role": "assistant", "content": "not json"}],
        [{"role": "assistant", "content": '{"score": 0.9}'}],
    ]
    refs = ['{"score": 0.9}'] * 3
    assert funcs[0](prompts, completions, reference=refs) == [1.0, 0.0, 1.0]
    close = funcs[1](prompts, completions, reference=refs, trainer_state=object())
    assert close == pytest.approx([0.8, 0.0, 1.0])


def test_a_config_without_rewards_is_refused(tmp_path: Path) -> None:
    config = GRPOConfig(output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"needs at least one \[\[reward\]\] table"):
        GRPOTrainerPlugin(config).prepare(config, tmp_path, resume=False)


def profile_rows(shared_data: Path, n: int) -> list[dict[str, Any]]:
    import csv

    with (shared_data / "profiles" / "profiles.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": f"Score this profile as JSON with 'score' (0-1).\n"
                    f"handle: {r['username']}\nbio: {r['bio']}",
                },
                {"role": "assistant", "content": json.dumps({"score": float(r["score"])})},
            ],
            "score": r["score"],
            "follower_count": r["follower_count"],
        }
        for r in rows
    ]


@pytest.mark.slow
def test_a_short_run_plans_samples_rewards_checkpoints_and_resumes(
    shared_data: Path, tmp_path: Path
) -> None:
    from hwkit.jobs import train

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in profile_rows(shared_data, 12)))
    out = tmp_path / "run"
    doc: dict[str, Any] = {
        "output_dir": out,
        "data": DataConfig(
            source=str(data),
            mapping={"keep": ["score"]},  # the rewards read the source's own score column
            validation_fraction=0.2,
            thresholds={
                "min_answers": 1,
                "min_words_per_answer": 0,
                "min_categories": 0,
                "min_total_words": 0,
            },
        ),
        "effective_batch": 4,
        "num_generations": 2,
        "max_completion_length": 8,
        "max_seq_len": 256,
        "lora_rank": 4,
        "learning_rate": 1e-4,
        "max_steps": 1,
        "save_steps": 1,
        "eval": {"max_rows": 2},
        "reward": [
            {"name": "json_valid", "weight": 1.0},
            {"name": "length", "weight": 1.0, "options": {"max_words": 4}},
            {
                "name": "numeric_closeness",
                "weight": 1.0,
                "options": {"field": "score", "reference": "score"},
            },
        ],
    }
    result = train(GRPOTrainerPlugin(), GRPOConfig(**doc))
    assert result.steps == 1
    plan = json.loads((out / "plan.json").read_text())
    assert plan["job"] == "grpo" and plan["group_size"] == 2 and plan["completion_len"] == 8
    assert plan["generation_batch"] in (2, 4) and "group_size" in plan["reasons"]
    # the update is planned at the longest prompt (chat template included) plus completion
    from transformers import AutoTokenizer

    from hwkit.models import resolve_model
    from hwkit.plugins.trainers.grpo import prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    longest = max(len(prompt_ids(tokenizer, r["messages"][:-1])) for r in rows)
    assert longest > 30 and plan["max_seq_len"] == longest + 8
    events = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    probe = next(e for e in events if e["event"] == "grpo.probe")
    assert probe["completion_tokens"] == 8 and probe["sequences"] == plan["generation_batch"]
    assert probe["prompt_tokens"] == longest
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {k for m in metrics for k in m}
    assert {"rewards/json_valid/mean", "rewards/length/mean", "reward"} <= logged, logged
    report = json.loads((out / "report.json").read_text())
    for phase in ("eval_before", "eval_after"):
        assert report[phase]["eval_rows"] == 2
        assert 0.0 <= report[phase]["eval_reward"] <= 1.0
        assert not math.isnan(report[phase]["eval_reward/length"])
    stats = json.loads((out / "rewards.json").read_text())
    assert stats["json_valid"]["calls"] >= 1 and stats["json_valid"]["failures"] == 0
    # the kept column reached the reward in training and on held-out rows: no fallbacks
    assert stats["numeric_closeness"]["calls"] >= 1
    assert stats["numeric_closeness"]["failures"] == 0
    assert not math.isnan(report["eval_after"]["eval_reward/numeric_closeness"])
    assert (out / "adapter_model.safetensors").is_file()

    # resume: one more step from the step-1 checkpoint, the same baseline
    doc["max_steps"] = 2
    again = train(GRPOTrainerPlugin(), GRPOConfig(**doc), resume=True)
    assert again.steps == 2
    second = json.loads((out / "report.json").read_text())
    assert second["resumed_from"] and second["resumed_from"].endswith("checkpoint-1")
    assert second["eval_before"] == report["eval_before"]
