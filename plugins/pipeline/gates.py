"""Metric gates: the bars a candidate model's metrics must clear before it may replace the
champion, modelled on MLflow's ``MetricThreshold``.

A gate holds any of three bounds on one metric: ``threshold`` (an absolute bar),
``min_absolute_change`` and ``min_relative_change`` (how far past the champion's value the
candidate must be). ``greater_is_better`` turns every bound around for metrics such as loss.
Change bounds need a champion that has the metric; without one they are skipped, and said to
be. A NaN never passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwkit.errors import ConfigError

BoundKind = Literal["threshold", "absolute_change", "relative_change"]


class MetricThreshold(BaseModel):
    """One gate: a metric and at least one bound on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(min_length=1)
    threshold: float | None = Field(None, allow_inf_nan=False)
    min_absolute_change: float | None = Field(None, ge=0, allow_inf_nan=False)
    min_relative_change: float | None = Field(None, ge=0, lt=1)
    greater_is_better: bool = True

    @model_validator(mode="after")
    def _one_bound(self) -> MetricThreshold:
        if (self.threshold, self.min_absolute_change, self.min_relative_change) == (None,) * 3:
            raise ValueError("give threshold, min_absolute_change or min_relative_change")
        return self


@dataclass(frozen=True)
class GateCheck:
    """One bound checked. ``bound`` is the value compared with (for a change bound, the
    champion's value moved by the change); a skipped check counts as passed."""

    metric: str
    value: float
    champion: float | None
    kind: BoundKind
    bound: float | None
    passed: bool
    skipped: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: list[GateCheck]

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def _n(x: float) -> str:
    return f"{x:.4g}"


def _clears(value: float, bound: float, greater_is_better: bool) -> bool:
    """``value`` on the good side of ``bound``; equal within float noise counts
    (0.87 + 0.02 is not exactly 0.89)."""
    if math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12):
        return True
    return value > bound if greater_is_better else value < bound


def _threshold(gate: MetricThreshold, value: float, champion: float | None) -> GateCheck:
    assert gate.threshold is not None
    bound, better = gate.threshold, gate.greater_is_better
    ok = not math.isnan(value) and _clears(value, bound, better)
    if math.isnan(value):
        reason = f"{gate.metric} is NaN (threshold {_n(bound)})"
    else:
        op = (">=" if better else "<=") if ok else ("<" if better else ">")
        reason = f"{gate.metric} {_n(value)} {op} {_n(bound)} (threshold)"
    return GateCheck(gate.metric, value, champion, "threshold", bound, ok, False, reason)


def _change(
    gate: MetricThreshold, kind: BoundKind, value: float, champion: float | None
) -> GateCheck:
    """An absolute or relative change bound against the champion's value."""
    metric, better = gate.metric, gate.greater_is_better
    setting = gate.min_absolute_change if kind == "absolute_change" else gate.min_relative_change
    assert setting is not None
    shown = _n(setting) if kind == "absolute_change" else f"{setting * 100:.4g}%"
    if champion is None or math.isnan(champion):
        why = "no champion value" if champion is None else "the champion's value is NaN"
        reason = f"{metric}: {kind.replace('_', ' ')} skipped ({why} to compare with)"
        return GateCheck(metric, value, champion, kind, None, True, True, reason)
    step = setting if kind == "absolute_change" else abs(champion) * setting
    bound = champion + step if better else champion - step
    direction = "above" if better else "below"
    if math.isnan(value):
        ok = False
        reason = f"{metric} is NaN (needs {shown} {direction} the champion's {_n(champion)})"
    else:
        ok = _clears(value, bound, better)
        verdict = "is at least" if ok else "is not"
        reason = f"{metric} {_n(value)} {verdict} {shown} {direction} the champion's {_n(champion)}"
    return GateCheck(metric, value, champion, kind, bound, ok, False, reason)


def evaluate_gates(
    candidate: Mapping[str, float],
    thresholds: Sequence[MetricThreshold],
    champion: Mapping[str, float] | None,
) -> GateResult:
    """Check every bound of every gate; passed when none failed. A gated metric the
    candidate lacks is a config error, not a failed gate: the gate names a wrong metric."""
    checks: list[GateCheck] = []
    for gate in thresholds:
        if gate.metric not in candidate:
            raise ConfigError(
                f"gate on {gate.metric!r}: the candidate has no such metric",
                hint=f"its metrics: {', '.join(sorted(candidate)) or 'none'}",
            )
        value = float(candidate[gate.metric])
        base = champion.get(gate.metric) if champion is not None else None
        base = None if base is None else float(base)
        if gate.threshold is not None:
            checks.append(_threshold(gate, value, base))
        if gate.min_absolute_change is not None:
            checks.append(_change(gate, "absolute_change", value, base))
        if gate.min_relative_change is not None:
            checks.append(_change(gate, "relative_change", value, base))
    return GateResult(all(c.passed for c in checks), checks)


def parse_gates(rows: list[dict[str, Any]], where: str) -> list[MetricThreshold]:
    """Gates from config rows (``[[gates]]`` in TOML); the first bad field is reported in
    one line naming ``where``, the gate (1-based) and the field."""
    gates: list[MetricThreshold] = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: gate {i}: expected a table, got {row!r}")
        try:
            gates.append(MetricThreshold.model_validate(row))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            field = f"field {loc!r}: " if loc else ""
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            metric = f" ({row['metric']!r})" if isinstance(row.get("metric"), str) else ""
            raise ConfigError(
                f"{where}: gate {i}{metric}: {field}{msg}{shown}{more}",
                hint="see docs/pipeline.md (Gates) for the gate fields",
            ) from None
    return gates
