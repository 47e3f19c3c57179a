"""Rewards combined from a config: ``[[reward]]`` entries with weights and fallbacks.

.. code-block:: toml

    [[reward]]
    name = "json_valid"
    weight = 0.2

    [[reward]]
    name = "numeric_closeness"
    weight = 0.8
    fallback = 0.0
    options = { field = "score" }

``build_rewards(specs, plugins)`` looks each name up in the ``rewards`` registry and builds
a :class:`CompositeReward`: the weighted mean ``sum(w_i * r_i) / sum(w_i)`` of its
components. A component whose reward raises, or returns NaN or an infinity, for some
completions uses its ``fallback`` for those completions only; each failure is counted
(``RewardComponent.failures``, ``CompositeReward.stats()``) and logged once per batch, and
the run goes on. Setup errors (:data:`hwkit.reward.SETUP_ERRORS`) stop it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.reward import SETUP_ERRORS, Reward, check_lengths

if TYPE_CHECKING:
    from hwkit.plugin_manager import PluginManager

log = get_logger("hwkit.rewards")


class RewardSpec(BaseModel):
    """One ``[[reward]]`` entry: a registered reward, its weight, options and fallback."""

    model_config = ConfigDict(extra="forbid")

    name: str
    weight: float = 1.0
    options: dict[str, Any] = Field(default_factory=dict)
    fallback: float = 0.0


class RewardComponent:
    """A reward with its weight and fallback; calling it scores a batch, never raising for a
    completion the reward cannot judge (only for :data:`~hwkit.reward.SETUP_ERRORS`)."""

    def __init__(
        self, reward: Reward, weight: float, fallback: float, *, key: str | None = None
    ) -> None:
        self.reward = reward
        self.name: str = reward.name
        self.key = key or reward.name  # unique within a composite: "regex", "regex#2"
        self.weight = float(weight)
        self.fallback = float(fallback)
        self.failures = 0  # completions that got the fallback
        self.calls = 0  # batches scored
        self.items = 0  # completions scored
        self.total = 0.0  # sum of the values returned (fallbacks included)
        self.last_failed: list[bool] = []  # per completion of the last batch

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        check_lengths(prompts, completions, rows)
        n = len(completions)
        raw: list[Any]
        errors: list[str | None] = [None] * n
        try:
            raw = list(self.reward.score_batch(prompts, completions, rows))
            if len(raw) != n:
                raise ValueError(f"score_batch returned {len(raw)} values for {n} completions")
        except SETUP_ERRORS:
            raise
        except Exception:  # the batch failed: score one by one so only failing items fall back
            raw = []
            for i, (p, c, r) in enumerate(zip(prompts, completions, rows, strict=True)):
                try:
                    raw.append(self.reward.score(p, c, r))
                except SETUP_ERRORS:
                    raise
                except Exception as exc:
                    raw.append(None)
                    errors[i] = f"{type(exc).__name__}: {exc}"
        values: list[float] = []
        for i, value in enumerate(raw):
            number = _as_float(value)
            if number is None:
                errors[i] = errors[i] or f"returned {value!r}"
                number = self.fallback
            values.append(number)
        failed = [e is not None for e in errors]
        count = sum(failed)
        if count:
            first = next(e for e in errors if e is not None)
            log.warning(
                "reward.failed",
                reward=self.key,
                failed=count,
                batch=n,
                fallback=self.fallback,
                error=first[:300],
            )
        self.failures += count
        self.calls += 1
        self.items += n
        self.total += sum(values)
        self.last_failed = failed
        return values

    def stats(self) -> dict[str, Any]:
        return {
            "reward": self.name,
            "weight": self.weight,
            "calls": self.calls,
            "items": self.items,
            "failures": self.failures,
            "mean": self.total / self.items if self.items else None,
        }


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class CompositeReward:
    """The weighted mean of its components: ``sum(w_i * r_i) / sum(w_i)``."""

    def __init__(self, components: list[RewardComponent]) -> None:
        if not components:
            raise ConfigError("no rewards configured", hint="add a [[reward]] entry")
        self.components = components
        self.total_weight = sum(c.weight for c in components)
        self.last_failed: list[bool] = []  # per completion of the last call: any fallback

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        check_lengths(prompts, completions, rows)
        values = self.score_components(prompts, completions, rows)
        flags = [c.last_failed for c in self.components]
        self.last_failed = [any(f) for f in zip(*flags, strict=True)]
        return self.combine(values)

    def combine(self, values: Mapping[str, Sequence[float]]) -> list[float]:
        """The weighted mean per completion of each component's values (keyed by key)."""
        columns = [[c.weight * v for v in values[c.key]] for c in self.components]
        return [sum(parts) / self.total_weight for parts in zip(*columns, strict=True)]

    def score_components(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> dict[str, list[float]]:
        """Each component's values (fallbacks applied), keyed by component key."""
        return {c.key: c(prompts, completions, rows) for c in self.components}

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Let every component fit its statistics over the whole dataset (``columns``)."""
        for component in self.components:
            component.reward.fit(rows)

    @property
    def failures(self) -> int:
        return sum(c.failures for c in self.components)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per component (by key): reward, weight, calls, items, failures, mean."""
        return {c.key: c.stats() for c in self.components}

    def close(self) -> None:
        for component in self.components:
            component.reward.close()

    def __enter__(self) -> CompositeReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_specs(
    specs: Sequence[RewardSpec | Mapping[str, Any]], *, where: str = "reward"
) -> list[RewardSpec]:
    """``[[reward]]`` entries validated; a bad one is a ConfigError naming its field."""
    if isinstance(specs, Mapping) or not isinstance(specs, Sequence):
        raise ConfigError(f"{where}: must be a list of reward tables ([[reward]])")
    out: list[RewardSpec] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, RewardSpec):
            out.append(spec)
            continue
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}[{i}]: must be a table, got {spec!r}")
        try:
            out.append(RewardSpec.model_validate(dict(spec)))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{where}[{i}].{field}: {err['msg']}") from None
    for i, spec in enumerate(out):
        for field in ("weight", "fallback"):
            value = getattr(spec, field)
            if not math.isfinite(value):
                raise ConfigError(
                    f"{where}[{i}].{field} ({spec.name}): must be a finite number, got {value}"
                )
    total = sum(s.weight for s in out)
    if out and not total > 0:
        listing = ", ".join(f"{where}[{i}].weight={s.weight:g}" for i, s in enumerate(out))
        raise ConfigError(
            f"{where}: the weights sum to {total:g}; they must sum to a positive number ({listing})"
        )
    return out


def build_rewards(
    specs: Sequence[RewardSpec | Mapping[str, Any]],
    plugins: PluginManager | None = None,
    *,
    where: str = "reward",
) -> CompositeReward:
    """A composite of the configured rewards, each looked up in ``plugins.rewards`` (default:
    the process's plugins) and built from its options."""
    parsed = parse_specs(specs, where=where)
    if not parsed:
        raise ConfigError(f"{where}: no rewards configured", hint="add a [[reward]] entry")
    if plugins is None:
        from hwkit.runtime import current

        plugins = current().plugins
    registry = plugins.rewards
    components: list[RewardComponent] = []
    seen: dict[str, int] = {}
    try:
        for i, spec in enumerate(parsed):
            if spec.name not in registry:
                raise ConfigError(
                    f"unknown reward {spec.name!r}; registered: {', '.join(registry.names())}",
                    hint=f"{where}[{i}].name; hwkit rewards list describes them",
                )
            cls = registry.get(spec.name)
            try:
                reward = cls(**spec.options)
            except ConfigError as exc:
                raise ConfigError(f"{where}[{i}]: {exc.message}", hint=exc.hint) from None
            seen[spec.name] = seen.get(spec.name, 0) + 1
            key = spec.name if seen[spec.name] == 1 else f"{spec.name}#{seen[spec.name]}"
            components.append(RewardComponent(reward, spec.weight, spec.fallback, key=key))
    except BaseException:
        for built in components:
            built.reward.close()
        raise
    return CompositeReward(components)


def specs_from_toml(doc: Mapping[str, Any], *, where: str) -> list[RewardSpec]:
    """The ``[[reward]]`` list of a parsed TOML document."""
    if "reward" not in doc:
        raise ConfigError(f"{where}: no [[reward]] entries", hint="docs/rewards.md")
    return parse_specs(doc["reward"], where=f"{where}: reward")
