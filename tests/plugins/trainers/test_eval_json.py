"""Structured-task evaluation (the profile scorer's JSON target): validity rate and
Pearson/Spearman of generated scores against reference scores; bad run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from hwkit.errors import NotFoundError
from hwkit.plugins.trainers.evaluate import evaluate_run, json_metrics, parse_json_object


def _sample(after: str, ref_score: float) -> dict[str, str]:
    return {"after": after, "reference": json.dumps({"score": ref_score, "reason": "ref"})}


def test_json_object_is_found_inside_generated_text() -> None:
    assert parse_json_object('Sure! {"score": 7, "reason": "clear"} Hope that helps.') == {
        "score": 7,
        "reason": "clear",
    }
    assert parse_json_object('{"score": 7,') is None
    assert parse_json_object("[1, 2]") is None
    assert parse_json_object("no json here") is None


def test_validity_rate_and_correlations() -> None:
    generated = [
        _sample('{"score": 8, "reason": "strong"}', 9),
        _sample('Here you go: {"score": 3}', 2),
        _sample('{"score": 5}', 6),
        _sample('{"score": 9}', 7),
        _sample('{"score": "high"}', 5),  # valid JSON, score not a number: not correlated
        _sample("I cannot score this profile.", 4),  # invalid
    ]
    out = json_metrics(generated, "score")
    assert out["json_valid_rate"] == pytest.approx(5 / 6)
    assert out["json_scored"] == 4
    ours, refs = [8, 3, 5, 9], [9, 2, 6, 7]
    assert out["pearson"] == pytest.approx(stats.pearsonr(ours, refs).statistic)
    assert out["spearman"] == pytest.approx(stats.spearmanr(ours, refs).statistic)
    assert 0 < out["spearman"] < 1


def test_too_few_scores_give_no_correlation() -> None:
    out = json_metrics([_sample('{"score": 1}', 1), _sample('{"score": 2}', 3)], "score")
    assert out["json_valid_rate"] == 1.0 and out["pearson"] is None and out["spearman"] is None


def test_eval_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        evaluate_run(tmp_path / "missing")
    with pytest.raises(NotFoundError, match="not a finished hwkit run"):
        evaluate_run(tmp_path)
