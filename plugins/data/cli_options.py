"""The data options ``hwkit data check`` and ``hwkit data prepare`` share, declared once.

:class:`DataOptions` holds what the command line says about the data (mapping, filters,
split, readiness minimums); :func:`with_data_options` gives a command those options in
place of its ``options`` parameter and hands them over as one ``DataOptions``, so both
commands take the same flags and turn them into config overrides the same way.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from hwkit.plugins.data import DataConfig

F = TypeVar("F", bound=Callable[..., Any])

SPLIT_FIELDS = ("validation_fraction", "seed")  # only `prepare` writes a split


@dataclass(frozen=True)
class DataOptions:
    """Command-line overrides of a data config; ``None`` keeps the config's value."""

    query: str | None = None
    kind: str | None = None
    system_prompt: str | None = None
    template: str | None = None
    feedback: str | None = None
    dedupe: str | None = None
    min_confidence: float | None = None
    validation_fraction: float | None = None
    seed: int | None = None
    min_answers: int | None = None
    min_words: float | None = None
    min_categories: int | None = None
    min_total_words: int | None = None

    def overrides(self) -> dict[str, Any]:
        """The config fields these options set (readiness minimums as ``thresholds``)."""
        thresholds = {
            "min_answers": self.min_answers,
            "min_words_per_answer": self.min_words,
            "min_categories": self.min_categories,
            "min_total_words": self.min_total_words,
        }
        values = {
            "query": self.query,
            "kind": self.kind,
            "system_prompt": self.system_prompt,
            "template": self.template,
            "feedback": self.feedback,
            "dedupe": self.dedupe,
            "min_confidence": self.min_confidence,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "thresholds": {k: v for k, v in thresholds.items() if v is not None},
        }
        return {k: v for k, v in values.items() if v is not None and v != {}}

    def config(self, target: str) -> DataConfig:
        """The data config for ``target`` (a TOML file or a source) with these overrides."""
        from hwkit.plugins.data import DataConfig

        if target.lower().endswith(".toml"):
            return DataConfig.from_toml(Path(target), overrides=self.overrides())
        return DataConfig.validated({"source": target, **self.overrides()}, where="command line")


# (typer option, type) of each DataOptions field, in --help order.
OPTIONS: dict[str, tuple[Any, Any]] = {
    "query": (typer.Option(None, "--query", "-q", help="SQL query for a database source."), str),
    "kind": (typer.Option(None, "--kind", help="sft or preference (default sft)."), str),
    "system_prompt": (
        typer.Option(None, "--system-prompt", help="System/persona message for every row."),
        str,
    ),
    "template": (
        typer.Option(None, "--template", help="User turn with {column} placeholders."),
        str,
    ),
    "feedback": (
        typer.Option(
            None, "--feedback", help="auto, pairs, thumbs, ab, correction or rating (preference)."
        ),
        str,
    ),
    "dedupe": (typer.Option(None, "--dedupe", help="exact (default), near or none."), str),
    "min_confidence": (
        typer.Option(None, "--min-confidence", help="Reject rows below this confidence."),
        float,
    ),
    "validation_fraction": (
        typer.Option(None, "--validation-fraction", help="Share held out (default 0.1)."),
        float,
    ),
    "seed": (typer.Option(None, "--seed", help="Split seed (default 42)."), int),
    "min_answers": (
        typer.Option(None, "--min-answers", help="Minimum answers (default 20)."),
        int,
    ),
    "min_words": (
        typer.Option(None, "--min-words-per-answer", help="Minimum mean words (default 30)."),
        float,
    ),
    "min_categories": (
        typer.Option(None, "--min-categories", help="Minimum categories (default 3)."),
        int,
    ),
    "min_total_words": (
        typer.Option(None, "--min-total-words", help="Minimum total words (default 1000)."),
        int,
    ),
}
assert list(OPTIONS) == [f.name for f in fields(DataOptions)], "OPTIONS and DataOptions differ"


def with_data_options(*, split: bool) -> Callable[[F], F]:
    """Give a command the shared data options where its ``options`` parameter stands
    (``split``: also --validation-fraction and --seed) and call it with a DataOptions."""

    def decorate(command: F) -> F:
        names = [n for n in OPTIONS if split or n not in SPLIT_FIELDS]
        shared = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=OPTIONS[name][0],
                annotation=OPTIONS[name][1] | None,
            )
            for name in names
        ]
        own = inspect.signature(command).parameters.values()
        params: list[inspect.Parameter] = []
        for param in own:
            if param.name == "options":
                params.extend(shared)
            else:
                params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, options=DataOptions(**given))

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {
            **{k: v for k, v in command.__annotations__.items() if k != "options"},
            **{p.name: p.annotation for p in shared},
        }
        return run  # type: ignore[return-value]

    return decorate
