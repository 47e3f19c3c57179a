"""DataConfig: where training rows come from and how they become chat examples.

One pydantic model so a trainer's TOML ``[data]`` table, the ``hwkit data`` CLI and Python
callers share the same fields, defaults and error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwkit.errors import ConfigError
from hwkit.tomlfile import read_toml

FeedbackKind = Literal["auto", "pairs", "thumbs", "ab", "correction", "rating"]


# Keys a prepared row or a GRPO prompt row has of its own: a kept column may not take them.
RESERVED_KEYS = (
    "messages",
    "chosen",
    "rejected",
    "columns",
    "prompt",
    "completion",
    "reference",
    "hwkit_columns",
)


class ColumnMapping(BaseModel):
    """Column names; ``None`` means auto-detect from common names (see docs/data.md)."""

    model_config = ConfigDict(extra="forbid")

    messages: str | None = None
    system: str | None = None
    user: str | None = None
    input: str | None = None
    assistant: str | None = None
    target: str | list[str] | None = None
    category: str | None = None
    confidence: str | None = None
    # preference / feedback records
    prompt: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    response: str | None = None
    thumbs: str | None = None
    response_a: str | None = None
    response_b: str | None = None
    choice: str | None = None
    corrected: str | None = None
    rating: str | None = None
    # source columns copied onto every prepared row, under "columns" (rewards read them)
    keep: list[str] = Field(default_factory=list)

    @field_validator("keep")
    @classmethod
    def _keep_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip():
                raise ValueError("an empty column name")
            if name in RESERVED_KEYS:
                raise ValueError(
                    f"{name!r} is a key of the prepared row itself; rename the column in "
                    "the query (SELECT x AS other)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a column is named twice")
        return value


class ReadinessThresholds(BaseModel):
    """Minimums a data set must meet before training is worth the time."""

    model_config = ConfigDict(extra="forbid")

    min_answers: int = Field(20, ge=0)
    min_words_per_answer: float = Field(30.0, ge=0)
    min_categories: int = Field(3, ge=0)
    min_total_words: int = Field(1000, ge=0)


class DataConfig(BaseModel):
    """A training data set: source, mapping, filters and split."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="file path, sqlite:/// or postgresql:// URL, or hf:LOCAL_PATH")
    query: str | None = Field(None, description="SQL query for database sources")
    split: str = Field("train", description="split to read from a local Hugging Face dataset")
    kind: Literal["sft", "preference"] = "sft"
    mapping: ColumnMapping = Field(default_factory=ColumnMapping)
    system_prompt: str | None = Field(None, description="persona/system message for every row")
    template: str | None = Field(None, description="user turn with {column} placeholders")
    feedback: FeedbackKind = "auto"
    min_rating_gap: float = Field(2.0, gt=0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 42
    dedupe: Literal["exact", "near", "none"] = "exact"
    near_threshold: float = Field(0.9, gt=0.0, le=1.0)
    min_confidence: float | None = None
    thresholds: ReadinessThresholds = Field(default_factory=ReadinessThresholds)

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source is empty: give a file path or a database URL")
        return value.strip()

    @classmethod
    def from_toml(cls, path: Path, *, overrides: dict[str, Any] | None = None) -> DataConfig:
        """Read a TOML file (its ``[data]`` table, or the whole file); relative paths resolve
        against the file's folder so a config works from any working directory."""
        doc = read_toml(path)
        table = doc.get("data", doc)
        prefix = "data." if "data" in doc else ""
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [data] must be a table")
        table = deep_merge(table, overrides or {})
        source = table.get("source")
        if isinstance(source, str) and _is_relative_file(source):
            table["source"] = _resolve_relative(source, path.parent)
        return cls.validated(table, where=f"{path}", prefix=prefix)

    @classmethod
    def validated(cls, data: dict[str, Any], *, where: str, prefix: str = "") -> DataConfig:
        """Validate, turning pydantic's error list into one line naming the first bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = prefix + ".".join(str(p) for p in err["loc"])
            more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
            raise ConfigError(
                f"{where}: field {field}: {err['msg']}{more}",
                hint="see docs/data.md for the DataConfig fields",
            ) from None


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` wins; nested tables (thresholds, mapping) merge key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _is_relative_file(source: str) -> bool:
    if "://" in source:
        return False
    path = source[3:] if source.startswith("hf:") else source
    return not Path(path).is_absolute()


def _resolve_relative(source: str, base: Path) -> str:
    if source.startswith("hf:"):
        return "hf:" + str((base / source[3:]).resolve())
    return str((base / source).resolve())
