"""Task metrics for held-out cases: the ``json-score`` task.

A case is a held-out row of the training run (``validation.jsonl``): the conversation up
to its last user turn is the prompt, the assistant reply after it the reference (a JSON
object with a score). The same figures come from the trained model (evaluate) and from the
deployed endpoint (verify), so the two can be gated alike:

- ``json_valid_rate``, ``json_scored``, ``pearson``, ``spearman``: ``json_metrics`` of
  ``hwkit eval`` (Pearson/Spearman need 3 scored cases with varying values, else None);
- ``positives``, ``positives_scored``, ``positives_mean``, ``positives_min``: the predicted
  scores of the cases whose *reference* matches the positives filter (a prediction that is
  not JSON, or has no number in the field, counts as 0.0: a positive the model cannot
  score is a miss, not a skip); None when no case matches;
- ``latency_p50_s``, ``latency_p95_s``: seconds per case (nearest-rank percentiles);
- ``cases``: how many were scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwkit.plugins.pipeline.config import EvaluateConfig, Positives


@dataclass(frozen=True)
class Case:
    """A held-out prompt and the reply it should get."""

    messages: list[dict[str, str]]
    reference: str


def cases_from_rows(rows: Sequence[dict[str, Any]], limit: int | None = None) -> list[Case]:
    """Cases from chat rows (``{"messages": [...]}``) that end in an assistant reply."""
    out: list[Case] = []
    for row in rows:
        messages = row.get("messages")
        if not isinstance(messages, list):
            continue
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users or users[-1] + 1 >= len(messages):
            continue
        last = users[-1]
        reply = messages[last + 1]
        if reply.get("role") != "assistant":
            continue
        out.append(Case([dict(m) for m in messages[: last + 1]], str(reply.get("content", ""))))
        if limit is not None and len(out) >= limit:
            break
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return float(ordered[rank - 1])


def _number(text: str, field: str) -> float | None:
    from hwkit.plugins.trainers.evaluate import parse_json_object

    parsed = parse_json_object(text)
    if parsed is None:
        return None
    try:
        value = float(parsed[field])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _matches(value: float | None, positives: Positives) -> bool:
    if value is None:
        return False
    if positives.min is not None and value < positives.min:
        return False
    return not (positives.max is not None and value > positives.max)


def positive_metrics(samples: Sequence[dict[str, Any]], positives: Positives) -> dict[str, Any]:
    """Predicted ``positives.field`` over the cases whose reference matches the filter."""
    predicted: list[float] = []
    scored = 0
    for sample in samples:
        if not _matches(_number(sample.get("reference") or "", positives.field), positives):
            continue
        value = _number(sample.get("after") or "", positives.field)
        scored += value is not None
        predicted.append(0.0 if value is None else value)
    return {
        "positives": len(predicted),
        "positives_scored": scored,
        "positives_mean": sum(predicted) / len(predicted) if predicted else None,
        "positives_min": min(predicted) if predicted else None,
    }


def score(samples: Sequence[dict[str, Any]], settings: EvaluateConfig) -> dict[str, Any]:
    """Every metric of the ``json-score`` task; samples carry ``after`` (the model's
    reply), ``reference`` and ``latency_s``. Values that cannot be computed are None."""
    from hwkit.plugins.trainers.evaluate import json_metrics

    metrics: dict[str, Any] = {"cases": len(samples)}
    metrics.update(json_metrics(list(samples), settings.field))
    if settings.positives is not None:
        metrics.update(positive_metrics(samples, settings.positives))
    latencies = [float(s["latency_s"]) for s in samples if s.get("latency_s") is not None]
    metrics["latency_p50_s"] = percentile(latencies, 0.5)
    metrics["latency_p95_s"] = percentile(latencies, 0.95)
    return metrics


def gate_values(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as the gates read them: a value that could not be computed is NaN, which
    fails every bound on it."""
    return {k: math.nan if v is None else float(v) for k, v in metrics.items()}


def is_number(value: Any) -> bool:
    """An int or float (a bool is not a metric value)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics a registry version keeps: numbers only, no None or NaN."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if is_number(value) and math.isfinite(float(value)):
            out[key] = float(value)
    return out
