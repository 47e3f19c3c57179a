"""Text-check rewards: ``json_valid``, ``json_schema``, ``numeric_closeness``, ``regex``,
``length``. Each is a pure function of its inputs, cheap, and exact (0/1 or a linear score).

JSON is read the way ``hwkit eval`` and the pipeline's ``json-score`` task read a scorer's
answer (:func:`hwkit.plugins.trainers.evaluate.parse_json_object`: the first JSON object in
the text), so a reward and the metric it is meant to raise agree on what "valid" means.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.reward import Reward, RewardOptions

_MISSING = object()


def parse_json(text: str, *, strict: bool = False) -> Any:
    """The JSON in a completion, or ``_MISSING``.

    ``strict``: the whole completion (stripped) must be one JSON document. Otherwise the
    whole text is tried first, then the first JSON object in it (as ``hwkit eval`` counts
    ``json_valid_rate``), so an answer wrapped in prose or a code fence still counts.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except (json.JSONDecodeError, ValueError):
        if strict:
            return _MISSING
    from hwkit.plugins.trainers.evaluate import parse_json_object

    found = parse_json_object(text)
    return _MISSING if found is None else found


def number_of(value: Any, field: str | None = None) -> float | None:
    """A finite number from ``value``: itself (int/float, a numeric string) or, for a
    mapping or a JSON-object string, its ``field``. None when there is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return _finite(float(value))
        except ValueError:
            if field is None:
                return None
            parsed = parse_json(value)
            value = parsed if isinstance(parsed, dict) else None
    if isinstance(value, Mapping):
        if field is None or field not in value:
            return None
        return number_of(value[field])
    if isinstance(value, int | float):
        return _finite(float(value))
    return None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# -- json_valid ---------------------------------------------------------------------------------
class JsonValidOptions(RewardOptions):
    strict: bool = Field(
        False,
        description="the whole completion must be one JSON document (default: a JSON object "
        "anywhere in it counts, as hwkit eval's json_valid_rate)",
    )


class JsonValidReward(Reward):
    """1.0 when the completion holds JSON, else 0.0."""

    name = "json_valid"
    description = "1 if the completion is (or contains) a JSON object, else 0"
    options_model = JsonValidOptions
    options: JsonValidOptions

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return 0.0 if parse_json(completion, strict=self.options.strict) is _MISSING else 1.0


# -- json_schema --------------------------------------------------------------------------------
class JsonSchemaOptions(RewardOptions):
    # the option is ``schema``; the field is ``schema_`` (BaseModel has a ``schema`` method)
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="inline schema")
    schema_file: str | None = Field(None, description="path to a JSON schema file")
    strict: bool = False

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaOptions:
        if (self.schema_ is None) == (self.schema_file is None):
            raise ValueError("give exactly one of schema (inline) and schema_file")
        return self


class JsonSchemaReward(Reward):
    """1.0 when the completion's JSON validates against the schema; 0.0 when it does not or
    is not JSON. Uses the ``jsonschema`` library (``pip install 'hwkit[rewards]'``)."""

    name = "json_schema"
    description = "1 if the completion's JSON matches a JSON schema, else 0"
    options_model = JsonSchemaOptions
    options: JsonSchemaOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        schema = self.options.schema_
        if schema is None:
            path = Path(str(self.options.schema_file)).expanduser()
            if not path.is_file():
                raise NotFoundError(f"reward 'json_schema': schema file {path} does not exist")
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"reward 'json_schema': {path} is not JSON: {exc}") from None
        try:
            import jsonschema
        except ImportError:
            raise UnavailableError(
                "the json_schema reward needs the jsonschema library",
                hint="pip install 'hwkit[rewards]'",
            ) from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"reward 'json_schema': invalid schema: {exc.message}") from None
        self.validator = cls(schema)

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        value = parse_json(completion, strict=self.options.strict)
        if value is _MISSING:
            return 0.0
        return 1.0 if self.validator.is_valid(value) else 0.0


# -- numeric_closeness --------------------------------------------------------------------------
class NumericClosenessOptions(RewardOptions):
    field: str = Field(description="the JSON field of the completion that holds the number")
    reference: str = Field("reference", description="the row key of the reference")
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)


class NumericClosenessReward(Reward):
    """``max(0, 1 - |predicted - reference| / scale)``: the completion's JSON ``field``
    against the row's ``reference`` (a number, or a JSON object / JSON-object text holding
    ``field``). A completion without a number there scores 0; a row without a reference
    raises (the composite's fallback applies)."""

    name = "numeric_closeness"
    description = "1 - |completion's JSON field - reference| / scale, floored at 0"
    options_model = NumericClosenessOptions
    options: NumericClosenessOptions

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        opts = self.options
        if opts.reference not in row:
            raise KeyError(f"the row has no {opts.reference!r} column")
        reference = number_of(row[opts.reference], opts.field)
        if reference is None:
            raise ValueError(
                f"row value {opts.reference!r} holds no number for {opts.field!r}: "
                f"{str(row[opts.reference])[:80]!r}"
            )
        parsed = parse_json(completion)
        predicted = number_of(parsed, opts.field) if isinstance(parsed, dict) else None
        if predicted is None:
            return 0.0
        return max(0.0, 1.0 - abs(predicted - reference) / opts.scale)


# -- regex --------------------------------------------------------------------------------------
class RegexOptions(RewardOptions):
    pattern: str
    full: bool = Field(False, description="the whole (stripped) completion must match")
    ignore_case: bool = False


class RegexReward(Reward):
    """1.0 when the pattern is found in the completion (``full``: matches all of it)."""

    name = "regex"
    description = "1 if the completion matches a regular expression, else 0"
    options_model = RegexOptions
    options: RegexOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        flags = re.IGNORECASE if self.options.ignore_case else 0
        try:
            self.regex = re.compile(self.options.pattern, flags)
        except re.error as exc:
            raise ConfigError(
                f"reward 'regex': option pattern {self.options.pattern!r}: {exc}"
            ) from None

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        if self.options.full:
            return 1.0 if self.regex.fullmatch(completion.strip()) else 0.0
        return 1.0 if self.regex.search(completion) else 0.0


# -- length -------------------------------------------------------------------------------------
class LengthOptions(RewardOptions):
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=0)
    slack: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="outside the bounds the score falls linearly to 0 over this many "
        "characters (words); unset: 0 as soon as a bound is crossed",
    )

    @model_validator(mode="after")
    def _bounds(self) -> LengthOptions:
        chars = (self.min_chars, self.max_chars)
        words = (self.min_words, self.max_words)
        if any(v is not None for v in chars) and any(v is not None for v in words):
            raise ValueError("bound characters or words, not both")
        low, high = chars if any(v is not None for v in chars) else words
        if low is None and high is None:
            raise ValueError("give min_chars/max_chars or min_words/max_words")
        if low is not None and high is not None and low > high:
            raise ValueError(f"the minimum ({low}) is above the maximum ({high})")
        return self


class LengthReward(Reward):
    """1.0 inside the bounds; outside, ``max(0, 1 - distance / slack)`` (0 without slack).
    Characters are counted on the stripped completion, words split on whitespace."""

    name = "length"
    description = "1 inside character or word bounds, falling linearly to 0 over a slack"
    options_model = LengthOptions
    options: LengthOptions

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        o = self.options
        if o.min_words is not None or o.max_words is not None:
            n, low, high = len(completion.split()), o.min_words, o.max_words
        else:
            n, low, high = len(completion.strip()), o.min_chars, o.max_chars
        distance = 0
        if low is not None and n < low:
            distance = low - n
        elif high is not None and n > high:
            distance = n - high
        if distance == 0:
            return 1.0
        if o.slack is None:
            return 0.0
        return max(0.0, 1.0 - distance / o.slack)
