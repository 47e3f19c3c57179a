"""The ``columns`` reward (normalisations, per-follower engagement, missing values, the
engagement example on the real profiles set) and ``hwkit rewards pairs`` (exact pairs from
known rewards, ties and small margins skipped, read back by the preference data path)."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import tomllib
from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import ConfigError
from hwkit.plugins.rewards.columns import ColumnsReward
from hwkit.plugins.rewards.composite import build_rewards
from hwkit.plugins.rewards.pairs import PairCounts, Scored, pair_group
from hwkit.reward import RewardNotFitted
from hwkit.runtime import current

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "rewards" / "engagement.toml"
runner = CliRunner()


def _one(normalize: str, values: list[float], **extra: Any) -> ColumnsReward:
    reward = ColumnsReward(components=[{"column": "v", "normalize": normalize, **extra}])
    reward.fit([{"v": v} for v in values])
    return reward


def _at(reward: ColumnsReward, value: Any) -> float:
    return reward.score("", "", {"v": value})


def test_minmax() -> None:
    reward = _one("minmax", [1, 3, 9])
    assert [_at(reward, v) for v in (1, 3, 9, 5, -4, 20)] == [0.0, 0.25, 1.0, 0.5, 0.0, 1.0]
    assert _at(_one("minmax", [4, 4]), 4) == 0.5  # a constant column says nothing
    inverted = _one("minmax", [1, 3, 9], invert=True)
    assert _at(inverted, 3) == 0.75


def test_log1p_minmax() -> None:
    e = math.e
    reward = _one("log1p-minmax", [0.0, e - 1, e**2 - 1])
    assert _at(reward, 0) == 0.0
    assert _at(reward, e - 1) == pytest.approx(0.5)
    assert _at(reward, e**2 - 1) == pytest.approx(1.0)
    assert _at(reward, -5) == 0.0  # negatives count as 0


def test_zscore_through_the_normal_cdf() -> None:
    reward = _one("zscore", [2, 4, 4, 4, 5, 5, 7, 9])  # mean 5, population std 2
    assert _at(reward, 5) == 0.5
    assert _at(reward, 7) == pytest.approx(0.8413447460685429)  # Phi(1)
    assert _at(reward, 1) == pytest.approx(0.022750131948179195)  # Phi(-2)
    assert _at(_one("zscore", [3, 3, 3]), 10) == 0.5


def test_rank_with_ties_and_unseen_values() -> None:
    reward = _one("rank", [30, 10, 20, 20])
    assert [_at(reward, v) for v in (10, 20, 30, 5, 40)] == [0.0, 0.5, 1.0, 0.0, 1.0]
    assert _at(reward, 25) == pytest.approx(2.5 / 3)
    assert _at(_one("rank", [7]), 7) == 0.5


def test_none_and_numeric_strings() -> None:
    reward = _one("none", [0.1, 0.9])
    assert _at(reward, "0.42") == 0.42  # CSV cells are text
    assert _at(reward, 2.5) == 2.5


def test_engagement_per_follower_and_weights() -> None:
    reward = ColumnsReward(
        components=[
            {"column": ["likes", "reposts"], "per": "followers", "weight": 3},
            {"column": "review", "normalize": "none", "weight": 1},
        ]
    )
    rows = [
        {"likes": 10, "reposts": 0, "followers": 100, "review": 0.2},  # 0.1 per follower
        {"likes": 40, "reposts": 10, "followers": 100, "review": 1.0},  # 0.5
        {"likes": 20, "reposts": 10, "followers": 100, "review": 0.6},  # 0.3
    ]
    reward.fit(rows)
    # engagement minmax over [0.1, 0.5, 0.3]: 0, 1, 0.5
    assert [reward.score("", "", r) for r in rows] == pytest.approx(
        [(3 * 0.0 + 0.2) / 4, (3 * 1.0 + 1.0) / 4, (3 * 0.5 + 0.6) / 4]
    )
    assert reward.component_scores(rows[2]) == pytest.approx([0.5, 0.6])


def test_missing_values_error_skip_or_a_number() -> None:
    rows = [{"a": 1, "b": 0.5}, {"a": 3, "b": 0.7}, {"a": 2}, {"a": 2, "b": 0.3, "f": 0}]
    strict = ColumnsReward(components=[{"column": "a"}, {"column": "b", "normalize": "none"}])
    strict.fit(rows)
    with pytest.raises(ValueError, match="no value for 'b'"):
        strict.score("", "", rows[2])
    skip = ColumnsReward(
        components=[{"column": "a"}, {"column": "b", "normalize": "none", "missing": "skip"}]
    )
    skip.fit(rows)
    assert skip.score("", "", rows[2]) == 0.5  # only a (minmax 2 in [1, 3]) is left
    assert skip.score("", "", rows[1]) == pytest.approx((1.0 + 0.7) / 2)
    fixed = ColumnsReward(
        components=[{"column": "a"}, {"column": "b", "normalize": "none", "missing": 0.1}]
    )
    fixed.fit(rows)
    assert fixed.score("", "", rows[2]) == pytest.approx((0.5 + 0.1) / 2)
    per_zero = ColumnsReward(components=[{"column": "a", "per": "f", "missing": "skip"}])
    with pytest.raises(ConfigError, match="no row has a usable value"):
        ColumnsReward(components=[{"column": "a", "per": "f"}]).fit(rows)
    per_zero.fit(rows)  # unused, with a warning
    with pytest.raises(ValueError, match="no component"):
        per_zero.score("", "", rows[3])


def test_fit_errors_and_scoring_before_fit() -> None:
    reward = ColumnsReward(components=[{"column": "likes"}])
    with pytest.raises(RewardNotFitted, match="call fit"):
        reward.score("", "", {"likes": 1})
    with pytest.raises(ConfigError, match=r"column 'likes' is in no row; columns: like, views"):
        reward.fit([{"like": 1, "views": 2}])
    with pytest.raises(ConfigError, match="unknown option 'normalise'"):
        ColumnsReward(components=[{"column": "x"}], normalise="rank")
    with pytest.raises(ConfigError, match=r"components\.0\.normalize"):
        ColumnsReward(components=[{"column": "x", "normalize": "softmax"}])
    with pytest.raises(ConfigError, match="sum to a positive number"):
        ColumnsReward(components=[{"column": "x", "weight": 0}])
    with pytest.raises(ConfigError, match=r"components\.0\.weight"):
        ColumnsReward(components=[{"column": "x", "weight": math.nan}])


def test_the_composite_fits_and_propagates_not_fitted() -> None:
    composite = build_rewards(
        [{"name": "columns", "options": {"components": [{"column": "x"}]}}], current().plugins
    )
    with pytest.raises(RewardNotFitted):
        composite([""], [""], [{"x": 1}])
    composite.fit([{"x": 0}, {"x": 4}])
    assert composite(["", ""], ["", ""], [{"x": 1}, {"x": 4}]) == [0.25, 1.0]


def test_the_engagement_example_on_the_profiles_set(shared_data: Path) -> None:
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    (spec,) = doc["reward"]
    components = spec["options"]["components"]
    weights = {c["name"]: c["weight"] for c in components}
    assert weights == {
        "human_review": 0.25,
        "ai_review": 0.20,
        "engagement": 0.25,
        "network_influence": 0.15,
        "temporal_consistency": 0.10,
        "content_quality": 0.05,
    }
    profiles = shared_data / "profiles"
    with (profiles / "profiles.csv").open(encoding="utf-8", newline="") as fh:
        rows: list[dict[str, Any]] = list(csv.DictReader(fh))
    header = set(rows[0])
    named = set()
    for c in components:
        named.update([c["column"]] if isinstance(c["column"], str) else c["column"])
        named.update([c["per"]] if c.get("per") else [])
    # every column is in profiles.csv but the two the example says come from elsewhere
    assert named - header == {"human_review", "pagerank"}
    # pagerank comes from `hwkit data graph-features`; a stand-in here: in-degree share
    with (profiles / "follows.csv").open(encoding="utf-8", newline="") as fh:
        indegree = Counter(r["followed_id"] for r in csv.DictReader(fh))
    total = sum(indegree.values())
    for row in rows:
        row["pagerank"] = indegree[row["twitter_id"]] / total
    composite = build_rewards(doc["reward"], current().plugins)
    composite.fit(rows)
    values = composite([""] * len(rows), [""] * len(rows), rows)
    assert composite.failures == 0
    assert all(0.0 <= v <= 1.0 for v in values)
    assert len(set(values)) > len(values) // 2  # it discriminates
    # the reward tracks the AI review it weighs in: researchers (score > 0.5) score higher
    high = [v for v, r in zip(values, rows, strict=True) if float(r["score"]) > 0.5]
    low = [v for v, r in zip(values, rows, strict=True) if float(r["score"]) <= 0.5]
    assert sum(high) / len(high) > sum(low) / len(low)
    # human_review is absent from the sample: one row's reward is the mean of the other
    # five components with their weights renormalised
    columns = composite.components[0].reward
    assert isinstance(columns, ColumnsReward)
    scores = columns.component_scores(rows[0])
    assert scores[0] is None
    kept = [
        (c.weight, s)
        for c, s in zip(columns.options.components, scores, strict=True)
        if s is not None
    ]
    expected = sum(w * s for w, s in kept) / sum(w for w, _ in kept)
    assert values[0] == pytest.approx(expected)


# -- pairs ---------------------------------------------------------------------------------------
def test_pair_group_orders_skips_ties_and_small_margins() -> None:
    group = [Scored("q", "b", 0.5), Scored("q", "a", 0.9), Scored("q", "c", 0.5)]
    counts = PairCounts()
    rows = pair_group(group, min_margin=0.1, pairing="all", counts=counts)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("a", "b"), ("a", "c")]
    assert (counts.pairs, counts.ties, counts.below_margin) == (2, 1, 0)
    counts = PairCounts()
    rows = pair_group(group, min_margin=0.5, pairing="all", counts=counts)
    assert rows == [] and counts.below_margin == 2 and counts.ties == 1
    best_worst = pair_group(
        [*group, Scored("q", "d", 0.1)], min_margin=0, pairing="best_worst", counts=PairCounts()
    )
    assert [(r["chosen"], r["rejected"]) for r in best_worst] == [("a", "d")]
    rest = pair_group(
        [*group, Scored("q", "d", 0.1)], min_margin=0, pairing="best_vs_rest", counts=PairCounts()
    )
    assert [(r["chosen"], r["rejected"]) for r in rest] == [("a", "b"), ("a", "c"), ("a", "d")]
    same = PairCounts()
    assert (
        pair_group(
            [Scored("q", "x", 1), Scored("q", " x", 0)], min_margin=0, pairing="all", counts=same
        )
        == []
    )
    assert same.identical == 1


PAIRS_CONFIG = """
[pairs]
source = "completions.jsonl"
group_by = "prompt_id"
prompt = "question"
completion = "answer"
min_margin = 0.05

[[reward]]
name = "columns"
options = { components = [{ column = "quality", normalize = "none" }] }
"""


def _completions(tmp_path: Path) -> Path:
    rows = [
        {"prompt_id": 1, "question": "Q1?", "answer": "A1 good", "quality": 0.9},
        {"prompt_id": 1, "question": "Q1?", "answer": "A1 mid", "quality": 0.5},
        {"prompt_id": 1, "question": "Q1?", "answer": "A1 mid too", "quality": 0.5},  # tie
        {"prompt_id": 2, "question": "Q2?", "answer": "A2 x", "quality": 0.60},
        {"prompt_id": 2, "question": "Q2?", "answer": "A2 y", "quality": 0.58},  # < margin
        {"prompt_id": 3, "question": "Q3?", "answer": "A3 alone", "quality": 0.3},
        {"prompt_id": 4, "question": "Q4?", "answer": "A4 no quality"},  # reward fails
        {"prompt_id": 4, "question": "Q4?", "answer": "A4 low", "quality": 0.1},
        {"prompt_id": 5, "question": "Q5?", "answer": "A5 hi", "quality": 0.8},
        {"prompt_id": 5, "question": "Q5?", "answer": "A5 lo", "quality": 0.2},
        {"prompt_id": 5, "question": "Q5?", "answer": ""},  # no completion: skipped
    ]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = tmp_path / "pairs.toml"
    config.write_text(PAIRS_CONFIG, encoding="utf-8")
    return config


def test_pairs_command_writes_the_expected_pairs(tmp_path: Path) -> None:
    config = _completions(tmp_path)
    out = tmp_path / "out" / "pairs.jsonl"
    result = runner.invoke(app, ["rewards", "pairs", str(config), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert pairs == [
        {
            "prompt": "Q1?",
            "chosen": "A1 good",
            "rejected": "A1 mid",
            "chosen_reward": 0.9,
            "rejected_reward": 0.5,
        },
        {
            "prompt": "Q1?",
            "chosen": "A1 good",
            "rejected": "A1 mid too",
            "chosen_reward": 0.9,
            "rejected_reward": 0.5,
        },
        {
            "prompt": "Q5?",
            "chosen": "A5 hi",
            "rejected": "A5 lo",
            "chosen_reward": 0.8,
            "rejected_reward": 0.2,
        },
    ]
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("rows", "rows_skipped", "groups", "pairs")} == {
        "rows": 11,
        "rows_skipped": 1,
        "groups": 5,
        "pairs": 3,
    }
    assert (summary["ties"], summary["below_margin"], summary["failed"]) == (1, 1, 1)
    assert summary["singletons"] == 2  # Q3, and Q4 once its failed completion is left out
    assert summary["rewards"]["columns"]["failures"] == 1


def test_the_pairs_are_what_the_dpo_data_path_reads(tmp_path: Path) -> None:
    from hwkit.plugins.data import DataConfig, prepare

    config = _completions(tmp_path)
    out = tmp_path / "pairs.jsonl"
    assert runner.invoke(app, ["rewards", "pairs", str(config), "-o", str(out)]).exit_code == 0
    data = prepare(DataConfig(source=str(out), kind="preference", validation_fraction=0))
    got = {
        (r["prompt"][-1]["content"], r["chosen"][-1]["content"], r["rejected"][-1]["content"])
        for r in data.train
    }
    assert got == {
        ("Q1?", "A1 good", "A1 mid"),
        ("Q1?", "A1 good", "A1 mid too"),
        ("Q5?", "A5 hi", "A5 lo"),
    }
    assert all(r["chosen"][-1]["role"] == "assistant" for r in data.train)


def test_pairs_config_errors(tmp_path: Path) -> None:
    config = _completions(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(PAIRS_CONFIG.replace('"columns"', '"colums"'), encoding="utf-8")
    result = runner.invoke(app, ["rewards", "pairs", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "unknown reward 'colums'; registered: " in str(result.exception)
    assert not (tmp_path / "x").exists()
    wrong_column = tmp_path / "col.toml"
    wrong_column.write_text(config.read_text().replace('"answer"', '"reply"'), encoding="utf-8")
    result = runner.invoke(app, ["rewards", "pairs", str(wrong_column), "-o", str(tmp_path / "y")])
    assert isinstance(result.exception, ConfigError)
    assert "column 'reply' is in no row" in str(result.exception)


def test_rewards_list_shows_each_registered_reward() -> None:
    result = runner.invoke(app, ["rewards", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(listed) == set(current().plugins.rewards.names())
    assert listed["columns"]["plugin"] == "rewards"
    assert "normalised" in listed["columns"]["description"]
