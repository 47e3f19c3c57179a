"""Preference pairs from a reward: ``hwkit rewards pairs CONFIG.toml --out pairs.jsonl``.

The config names a source of rows (any source ``hwkit data`` reads: JSONL/JSON/CSV, a
database URL with ``query``, ``hf:PATH``), the ``prompt`` and ``completion`` columns, the
``group_by`` column that says which rows answer the same prompt (default: the prompt text)
and the ``[[reward]]`` list. Every completion is scored by the composite reward (its
``columns`` components fitted over all rows first); within each group, completions are
paired, the higher reward chosen, the lower rejected:

- ``pairing = "all"``: every two completions of a group; ``"best_worst"``: the best with
  the worst; ``"best_vs_rest"``: the best with each other one;
- a pair whose rewards are equal (a tie), differ by less than ``min_margin``, or whose
  texts are the same is skipped and counted;
- with ``skip_failed`` (default), a completion for which a reward failed (its fallback was
  used) is left out of pairing.

Each pair is a row ``{"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}``
(texts; rewards as floats), the plain-text form of the ``pairs`` feedback kind that
``hwkit data`` and the ``dpo`` trainer read (``[data] kind = "preference"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwkit import atomic
from hwkit.errors import ConfigError, NotFoundError
from hwkit.log import get_logger
from hwkit.plugins.rewards.composite import RewardSpec, build_rewards, parse_specs

if TYPE_CHECKING:
    from hwkit.plugin_manager import PluginManager

log = get_logger("hwkit.rewards")

Pairing = Literal["all", "best_worst", "best_vs_rest"]
TIE = 1e-12  # rewards closer than this are equal


class PairsConfig(BaseModel):
    """The ``[pairs]`` table of a pairs config; ``[[reward]]`` entries are beside it."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="file path, database URL or hf:LOCAL_PATH")
    query: str | None = Field(None, description="SQL query for database sources")
    split: str = "train"
    group_by: str | None = Field(None, description="column of the prompt id (default: prompt)")
    prompt: str = "prompt"
    completion: str = "completion"
    min_margin: float = Field(0.0, ge=0, allow_inf_nan=False)
    pairing: Pairing = "all"
    skip_failed: bool = True
    batch_size: int = Field(32, ge=1)
    reward: list[RewardSpec] = Field(default_factory=list)


def load_config(path: Path) -> PairsConfig:
    """Read a pairs config; a relative file ``source`` resolves against the file's folder."""
    if not path.is_file():
        raise NotFoundError(f"pairs config {path} does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    table = doc.get("pairs")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: needs a [pairs] table (source, group_by, prompt, completion)")
    unknown = sorted(set(doc) - {"pairs", "reward"})
    if unknown:
        raise ConfigError(f"{path}: unknown table {unknown[0]!r}; known: pairs, reward")
    specs = parse_specs(doc.get("reward", []), where=f"{path}: reward")
    try:
        cfg = PairsConfig.model_validate({**table, "reward": specs})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: pairs.{where}: {err['msg']}") from None
    if not cfg.reward:
        raise ConfigError(f"{path}: no [[reward]] entries", hint="docs/rewards.md")
    source = cfg.source
    if "://" not in source and not source.startswith("hf:"):
        resolved = Path(source).expanduser()
        if not resolved.is_absolute():
            cfg.source = str((path.parent / resolved).resolve())
    return cfg


@dataclass
class Scored:
    prompt: str
    completion: str
    reward: float
    failed: bool = False


@dataclass
class PairCounts:
    groups: int = 0
    singletons: int = 0  # groups with fewer than two completions to pair
    pairs: int = 0
    ties: int = 0
    below_margin: int = 0
    identical: int = 0
    failed: int = 0  # completions left out because a reward failed
    extra: dict[str, Any] = field(default_factory=dict)


def pair_group(
    scored: Sequence[Scored], *, min_margin: float, pairing: Pairing, counts: PairCounts
) -> list[dict[str, Any]]:
    """Preference rows from one group's scored completions (see the module's docstring)."""
    ordered = sorted(scored, key=lambda s: -s.reward)  # stable: input order among equals
    if len(ordered) < 2:
        counts.singletons += 1
        return []
    if pairing == "all":
        candidates = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]
    elif pairing == "best_worst":
        candidates = [(ordered[0], ordered[-1])]
    else:
        candidates = [(ordered[0], b) for b in ordered[1:]]
    out: list[dict[str, Any]] = []
    for chosen, rejected in candidates:
        gap = chosen.reward - rejected.reward
        if gap <= TIE:
            counts.ties += 1
        elif gap < min_margin:
            counts.below_margin += 1
        elif chosen.completion.strip() == rejected.completion.strip():
            counts.identical += 1
        else:
            out.append(
                {
                    "prompt": chosen.prompt,
                    "chosen": chosen.completion,
                    "rejected": rejected.completion,
                    "chosen_reward": chosen.reward,
                    "rejected_reward": rejected.reward,
                }
            )
    counts.pairs += len(out)
    return out


def _text(value: Any) -> str:
    from hwkit.plugins.data.example import as_text

    return as_text(value)


def make_pairs(
    rows: Sequence[Mapping[str, Any]],
    cfg: PairsConfig,
    plugins: PluginManager | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score ``rows`` with ``cfg.reward`` and pair them; returns the pairs and a summary."""
    for column in (cfg.prompt, cfg.completion, cfg.group_by):
        if column is not None and rows and not any(column in r for r in rows):
            seen: dict[str, None] = {}
            for r in rows:
                seen.update(dict.fromkeys(r))
            raise ConfigError(
                f"pairs: column {column!r} is in no row; columns: {', '.join(seen) or 'none'}"
            )
    usable = [
        r
        for r in rows
        if _text(r.get(cfg.prompt))
        and _text(r.get(cfg.completion))
        and (cfg.group_by is None or r.get(cfg.group_by) is not None)
    ]
    counts = PairCounts()
    counts.extra["rows"] = len(rows)
    counts.extra["rows_without_prompt_or_completion"] = len(rows) - len(usable)
    groups: dict[Any, list[Scored]] = {}
    with build_rewards(cfg.reward, plugins) as reward:
        reward.fit(usable)
        for start in range(0, len(usable), cfg.batch_size):
            batch = usable[start : start + cfg.batch_size]
            prompts = [_text(r.get(cfg.prompt)) for r in batch]
            completions = [_text(r.get(cfg.completion)) for r in batch]
            values = reward(prompts, completions, batch)
            for row, p, c, v, bad in zip(
                batch, prompts, completions, values, reward.last_failed, strict=True
            ):
                key = p if cfg.group_by is None else _group_key(row.get(cfg.group_by))
                if bad and cfg.skip_failed:
                    counts.failed += 1
                    continue
                groups.setdefault(key, []).append(Scored(p, c, v, bad))
        stats = reward.stats()
    pairs: list[dict[str, Any]] = []
    for members in groups.values():
        counts.groups += 1
        pairs.extend(
            pair_group(members, min_margin=cfg.min_margin, pairing=cfg.pairing, counts=counts)
        )
    summary = {
        "rows": counts.extra["rows"],
        "rows_skipped": counts.extra["rows_without_prompt_or_completion"],
        "groups": counts.groups,
        "singletons": counts.singletons,
        "pairs": counts.pairs,
        "ties": counts.ties,
        "below_margin": counts.below_margin,
        "identical": counts.identical,
        "failed": counts.failed,
        "rewards": stats,
    }
    return pairs, summary


def _group_key(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict | list):
        return _text(value)
    return value


def run_pairs(config: Path, out: Path, plugins: PluginManager | None = None) -> dict[str, Any]:
    """Read the config's source, write the pairs to ``out`` (atomically), return a summary."""
    from hwkit.plugins.data.config import DataConfig
    from hwkit.plugins.data.sources import load, mask_url

    cfg = load_config(config)
    loaded = load(DataConfig(source=cfg.source, query=cfg.query, split=cfg.split))
    rejected = len(loaded.rejects.items)
    rows = [rec.data for rec in loaded.records]
    pairs, summary = make_pairs(rows, cfg, plugins)
    atomic.write_jsonl_atomic(out, pairs)
    summary = {"source": mask_url(cfg.source), "unreadable_rows": rejected, **summary}
    summary["out"] = str(out)
    log.info("rewards.pairs", **{k: v for k, v in summary.items() if k != "rewards"})
    return summary
