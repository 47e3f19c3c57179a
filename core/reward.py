"""The Reward contract: a named function of (prompt, completion, row) -> float.

Rewards score generated text for reinforcement learning (GRPO) and for building preference
pairs (``hwkit rewards pairs``). They are plugins (``hwkit_register_rewards``), so a
third-party reward is a peer of the built-ins (``json_valid``, ``json_schema``,
``numeric_closeness``, ``regex``, ``length``, ``reward_model``, ``llm_judge``, ``columns``).
A config combines several with weights (``hwkit.plugins.rewards.composite``).

- ``prompt`` is the user's prompt text, ``completion`` the generated text, ``row`` the data
  row's columns (for the profile scorer it holds ``reference``, the gold answer text, and
  the source columns).
- A reward is built from the options of a config (``MyReward(**options)``), validated by its
  ``options_model``: an option it does not take is a :class:`~hwkit.errors.ConfigError`
  listing the ones it does. ``__init__`` stays cheap: a model-backed reward loads its model
  on first use.
- ``score`` may raise, or return NaN, for a completion it cannot judge: a composite reward
  logs and counts it and uses the configured fallback for that completion only. Errors that
  no completion can escape (a :class:`~hwkit.errors.ConfigError`, a missing model
  (``NotFoundError``), a missing library (``UnavailableError``), a judge that fits no
  device (``NoFitError``), a reward used before ``fit``) are :data:`SETUP_ERRORS` and
  stop the run instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hwkit.errors import ConfigError, NoFitError, NotFoundError, UnavailableError, UsageError


class RewardOptions(BaseModel):
    """Options every reward takes (none); a reward's own model subclasses it."""

    model_config = ConfigDict(extra="forbid")


class RewardNotFitted(UsageError):
    """A reward that fits statistics over the dataset (``columns``) scored before ``fit``."""


# Errors that no completion can escape: a composite reward lets them through.
SETUP_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    NotFoundError,
    UnavailableError,
    NoFitError,
    RewardNotFitted,
)


def validate_options(
    model: type[RewardOptions], options: Mapping[str, Any], *, where: str
) -> RewardOptions:
    """``options`` validated by ``model``; one ConfigError naming the first bad option (an
    unknown one lists the options ``model`` knows)."""
    known = sorted(f.alias or name for name, f in model.model_fields.items())
    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = ", ".join(known) or "none"
        raise ConfigError(
            f"{where}: unknown option {unknown[0]!r}; known: {listing}",
            hint="docs/rewards.md lists each reward's options",
        )
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "options"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{where}: option {field}: {err['msg']}{more}") from None


class Reward(ABC):
    """Scores a completion of a prompt, given the data row it came from; higher is better.

    Subclasses set ``name`` (the registered name), ``description`` (one line for
    ``hwkit rewards list``) and ``options_model``, and implement ``score``. A model-backed
    reward overrides ``score_batch`` to run a batch at once; a reward that needs statistics
    over the whole dataset overrides ``fit``; one that holds a model frees it in ``close``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options_model: ClassVar[type[RewardOptions]] = RewardOptions
    # False for a reward of the row alone (``columns``): every completion of a prompt gets
    # the same value, which GRPO's group-relative advantage cancels (DPO pairs can use it)
    reads_completion: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        self.options = validate_options(
            self.options_model, options, where=f"reward {getattr(self, 'name', '?')!r}"
        )

    @abstractmethod
    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        """The reward of ``completion``; raise (or return NaN) when it cannot be judged."""

    def score_batch(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        """One reward per completion, in order (default: ``score`` on each)."""
        check_lengths(prompts, completions, rows)
        return [
            float(self.score(p, c, r)) for p, c, r in zip(prompts, completions, rows, strict=True)
        ]

    def fit(self, rows: Sequence[Mapping[str, Any]]) -> None:  # noqa: B027 - optional hook
        """Fit statistics over every row of the dataset before scoring (default: nothing)."""

    def close(self) -> None:  # noqa: B027 - rewards without a model have nothing to free
        """Release a model or generator the reward holds."""


def check_lengths(prompts: Sequence[Any], completions: Sequence[Any], rows: Sequence[Any]) -> None:
    """A batch's three sequences must be the same length."""
    if not len(prompts) == len(completions) == len(rows):
        raise ValueError(
            f"a reward batch needs as many prompts, completions and rows; got "
            f"{len(prompts)}, {len(completions)} and {len(rows)}"
        )
