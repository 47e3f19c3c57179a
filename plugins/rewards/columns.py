"""The ``columns`` reward: a weighted, normalised score from the data row's own columns.

A composite engagement reward as config, not code. Each component reads a column (or the
sum of several), optionally divided by another (``per = "follower_count"``: engagement per
follower) or measured as text length (``measure = "words"``), then normalised with
statistics fitted over the whole dataset (``fit(rows)``, once, before scoring):

- ``minmax``: ``(v - min) / (max - min)``, clipped to [0, 1] (0.5 when all values are equal);
- ``log1p-minmax``: the same on ``log1p(max(v, 0))`` (heavy-tailed counts: likes, views);
- ``zscore``: the standard score ``(v - mean) / std`` (population std) squashed into (0, 1)
  by the normal CDF, ``0.5 * (1 + erf(z / sqrt(2)))`` (0.5 when std is 0);
- ``rank``: the value's mid-rank among the fitted values, ``(position) / (n - 1)``: the
  lowest 0, the highest 1, ties share the mean of their positions, a value between two
  fitted ones sits half-way (0.5 with one fitted value);
- ``none``: the value as it is (a column already on a 0-1 scale).

``invert = true`` takes ``1 - normalised``. The reward is ``sum(w_i * s_i) / sum(w_i)``
over the components. A value that is absent (no column, None, empty, NaN, or a ``per``
divisor that is 0 or absent) follows the component's ``missing``: ``"error"`` (default:
the row raises and the composite's fallback applies), ``"skip"`` (the component is left
out of that row and the others' weights renormalised) or a number used as the normalised
score. ``prompt`` and ``completion`` are not read.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.reward import Reward, RewardNotFitted, RewardOptions

log = get_logger("hwkit.rewards")

Normalize = Literal["minmax", "zscore", "rank", "log1p-minmax", "none"]


class ColumnComponent(BaseModel):
    """One ``components`` entry of the ``columns`` reward."""

    model_config = ConfigDict(extra="forbid")

    column: str | list[str] = Field(description="a column, or several summed")
    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    normalize: Normalize = "minmax"
    per: str | None = Field(None, description="divide by this column first")
    invert: bool = False
    measure: Literal["value", "chars", "words"] = Field(
        "value", description="the cell's number, or its text's length in characters or words"
    )
    missing: Literal["error", "skip"] | float = "error"
    name: str | None = Field(None, description="a label for reports (default: the column)")

    @field_validator("column")
    @classmethod
    def _columns(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one column")
        return value

    @property
    def columns(self) -> list[str]:
        return [self.column] if isinstance(self.column, str) else list(self.column)

    @property
    def label(self) -> str:
        return self.name or "+".join(self.columns) + (f"/{self.per}" if self.per else "")


class ColumnsOptions(RewardOptions):
    components: list[ColumnComponent] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> ColumnsOptions:
        if not sum(c.weight for c in self.components) > 0:
            raise ValueError("the component weights must sum to a positive number")
        return self


@dataclass
class _Fitted:
    """Statistics of one component over the dataset; ``values`` sorted (rank only)."""

    count: int
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    values: list[float] | None = None


def _cell(value: Any, measure: str) -> float | None:
    """One cell as a number (None: absent). A text that is not a number raises."""
    if value is None:
        return None
    if measure != "value":
        text = value if isinstance(value, str) else str(value)
        return float(len(text.strip()) if measure == "chars" else len(text.split()))
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not a number") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"{value!r} is not a number")
    return number if math.isfinite(number) else None


def raw_value(component: ColumnComponent, row: Mapping[str, Any]) -> float | None:
    """The component's value for ``row`` before normalisation; None when it is absent."""
    total = 0.0
    for column in component.columns:
        value = _cell(row.get(column), component.measure)
        if value is None:
            return None
        total += value
    if component.per is not None:
        divisor = _cell(row.get(component.per), "value")
        if divisor is None or divisor <= 0:
            return None
        total /= divisor
    return total


def _fit(normalize: str, values: list[float]) -> _Fitted:
    fitted = _Fitted(len(values))
    if normalize == "log1p-minmax":
        values = [math.log1p(max(v, 0.0)) for v in values]
    if normalize in ("minmax", "log1p-minmax"):
        fitted.low, fitted.high = min(values), max(values)
    elif normalize == "zscore":
        fitted.mean = sum(values) / len(values)
        fitted.std = math.sqrt(sum((v - fitted.mean) ** 2 for v in values) / len(values))
    elif normalize == "rank":
        fitted.values = sorted(values)
    return fitted


def normalise(normalize: str, value: float, fitted: _Fitted) -> float:
    """``value`` on the component's scale (see the module's docstring)."""
    if normalize == "none":
        return value
    if normalize == "log1p-minmax":
        value = math.log1p(max(value, 0.0))
    if normalize in ("minmax", "log1p-minmax"):
        if fitted.high == fitted.low:
            return 0.5
        return min(1.0, max(0.0, (value - fitted.low) / (fitted.high - fitted.low)))
    if normalize == "zscore":
        if fitted.std == 0:
            return 0.5
        z = (value - fitted.mean) / fitted.std
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    assert fitted.values is not None  # rank
    ordered = fitted.values
    n = len(ordered)
    if n == 1:
        return 0.5
    lo, hi = bisect.bisect_left(ordered, value), bisect.bisect_right(ordered, value)
    position = (lo + hi - 1) / 2 if hi > lo else lo - 0.5
    return min(1.0, max(0.0, position / (n - 1)))


class ColumnsReward(Reward):
    """A weighted mean of normalised columns of the row (engagement, review scores, ...)."""

    name = "columns"
    description = "weighted mean of the row's columns, each normalised over the dataset (fit)"
    options_model = ColumnsOptions
    options: ColumnsOptions
    reads_completion = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.fitted: list[_Fitted | None] | None = None

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Fit each component's statistics over ``rows`` (the whole dataset, once).

        A component with no value in any row is a ConfigError (naming the columns seen)
        unless its ``missing`` is not ``"error"``: then it is left out, with a warning.
        """
        fitted: list[_Fitted | None] = []
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        for component in self.options.components:
            values: list[float] = []
            bad = 0
            for row in rows:
                try:
                    value = raw_value(component, row)
                except ValueError:
                    bad += 1
                    continue
                if value is not None:
                    values.append(value)
            if bad:
                log.warning("reward.columns.bad_values", component=component.label, rows=bad)
            if not values:
                absent = [c for c in (*component.columns, component.per) if c and c not in seen]
                why = (
                    f"column {absent[0]!r} is in no row" if absent else "no row has a usable value"
                )
                if component.missing == "error":
                    listing = ", ".join(seen) or "none"
                    raise ConfigError(
                        f"reward 'columns': component {component.label!r}: {why}; "
                        f"columns: {listing}",
                        hint='fix the column name, or set missing = "skip" to leave it out',
                    )
                log.warning("reward.columns.component_unused", component=component.label, why=why)
                fitted.append(None)
                continue
            fitted.append(_fit(component.normalize, values))
        self.fitted = fitted

    def component_scores(self, row: Mapping[str, Any]) -> list[float | None]:
        """Each component's normalised score for ``row``, in order (None: left out)."""
        if self.fitted is None:
            raise RewardNotFitted(
                "reward 'columns' is not fitted: call fit(rows) over the whole dataset first",
                hint="CompositeReward.fit(rows) fits every component",
            )
        out: list[float | None] = []
        for component, fitted in zip(self.options.components, self.fitted, strict=True):
            if fitted is None:
                out.append(None)
                continue
            value = raw_value(component, row)
            if value is None:
                if component.missing == "error":
                    raise ValueError(f"the row has no value for {component.label!r}")
                out.append(None if component.missing == "skip" else float(component.missing))
                continue
            score = normalise(component.normalize, value, fitted)
            out.append(1.0 - score if component.invert else score)
        return out

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        scores = self.component_scores(row)
        total = weights = 0.0
        for component, score in zip(self.options.components, scores, strict=True):
            if score is None:
                continue
            total += component.weight * score
            weights += component.weight
        if weights <= 0:
            raise ValueError("no component of the columns reward has a value for this row")
        return total / weights
