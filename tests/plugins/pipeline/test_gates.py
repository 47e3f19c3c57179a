"""Metric gates: thresholds, changes against the champion, direction, NaN, config errors."""

from __future__ import annotations

import math

import pytest

from hwkit.errors import ConfigError
from hwkit.plugins.pipeline.gates import MetricThreshold, evaluate_gates, parse_gates


def gate(**kw: object) -> MetricThreshold:
    return MetricThreshold.model_validate({"metric": "pearson", **kw})


def test_threshold_passes_and_fails_with_a_reason() -> None:
    ok = evaluate_gates({"pearson": 0.88}, [gate(threshold=0.85)], None)
    assert ok.passed and ok.checks[0].reason == "pearson 0.88 >= 0.85 (threshold)"
    bad = evaluate_gates({"pearson": 0.81}, [gate(threshold=0.85)], None)
    assert not bad.passed
    (check,) = bad.checks
    assert (check.kind, check.bound, check.value, check.skipped) == ("threshold", 0.85, 0.81, False)
    assert check.reason == "pearson 0.81 < 0.85 (threshold)"
    assert bad.failures() == [check]


def test_absolute_change_against_the_champion() -> None:
    g = [gate(min_absolute_change=0.02)]
    bad = evaluate_gates({"pearson": 0.88}, g, {"pearson": 0.87})
    assert not bad.passed
    assert bad.checks[0].reason == "pearson 0.88 is not 0.02 above the champion's 0.87"
    # 0.87 + 0.02 is 0.8900000000000001 in floats: equal still passes
    assert evaluate_gates({"pearson": 0.89}, g, {"pearson": 0.87}).passed


def test_relative_change_against_the_champion() -> None:
    g = [gate(min_relative_change=0.1)]
    assert evaluate_gates({"pearson": 0.8}, g, {"pearson": 0.7}).passed
    bad = evaluate_gates({"pearson": 0.75}, g, {"pearson": 0.7})
    assert not bad.passed and bad.checks[0].bound == pytest.approx(0.77)
    assert bad.checks[0].reason == "pearson 0.75 is not 10% above the champion's 0.7"


def test_change_bounds_skipped_without_a_champion_value() -> None:
    g = [gate(threshold=0.5, min_absolute_change=0.01, min_relative_change=0.05)]
    for champion in (None, {"other": 1.0}):
        result = evaluate_gates({"pearson": 0.6}, g, champion)
        assert result.passed
        assert [(c.kind, c.skipped) for c in result.checks] == [
            ("threshold", False),
            ("absolute_change", True),
            ("relative_change", True),
        ]
        assert "skipped" in result.checks[1].reason


def test_lower_is_better_turns_every_bound_around() -> None:
    g = [
        MetricThreshold(
            metric="loss", threshold=2.0, min_absolute_change=0.1, greater_is_better=False
        )
    ]
    assert evaluate_gates({"loss": 1.5}, g, {"loss": 1.7}).passed
    bad = evaluate_gates({"loss": 2.5}, g, {"loss": 2.55})
    assert [c.passed for c in bad.checks] == [False, False]
    assert bad.checks[0].reason == "loss 2.5 > 2 (threshold)"
    assert bad.checks[1].reason == "loss 2.5 is not 0.1 below the champion's 2.55"
    assert bad.checks[1].bound == pytest.approx(2.45)


def test_nan_fails_its_gate() -> None:
    result = evaluate_gates(
        {"pearson": math.nan}, [gate(threshold=0.0, min_absolute_change=0.0)], {"pearson": 0.5}
    )
    assert not result.passed and [c.passed for c in result.checks] == [False, False]
    assert "NaN" in result.checks[0].reason


def test_missing_candidate_metric_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'pearson'") as exc:
        evaluate_gates({"f1": 0.5, "em": 0.3}, [gate(threshold=0.5)], None)
    assert "its metrics: em, f1" in str(exc.value)


def test_parse_gates_and_its_errors_name_the_field() -> None:
    rows = [{"metric": "f1", "threshold": 0.5}, {"metric": "loss", "min_relative_change": 0.1}]
    assert [g.metric for g in parse_gates(rows, where="p.toml")] == ["f1", "loss"]
    with pytest.raises(ConfigError, match=r"p.toml: gate 2 \('loss'\): field 'threshold'"):
        parse_gates([rows[0], {"metric": "loss", "threshold": "high"}], where="p.toml")
    with pytest.raises(ConfigError, match="field 'treshold': Extra inputs"):
        parse_gates([{"metric": "f1", "treshold": 0.5}], where="p.toml")
    with pytest.raises(ConfigError, match=r"gate 1 \('f1'\): give threshold, min_absolute_change"):
        parse_gates([{"metric": "f1"}], where="p.toml")
    with pytest.raises(ConfigError, match="field 'min_absolute_change'"):
        parse_gates([{"metric": "f1", "min_absolute_change": -1}], where="p.toml")
    with pytest.raises(ConfigError, match="gate 1: expected a table"):
        parse_gates(["f1"], where="p.toml")  # type: ignore[list-item]
