"""The readiness report: is there enough of the user's voice to be worth a fine-tune?

Counts come from the kept examples (for preference data, the chosen answers); the
thresholds are configurable because a scorer's JSON answers are short by design.
"""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import BaseModel, Field

from hwkit.plugins.data.config import ReadinessThresholds
from hwkit.plugins.data.example import Example, word_count


class Check(BaseModel):
    name: str
    value: float
    minimum: float
    met: bool


class ReadinessReport(BaseModel):
    """What ``hwkit data check`` prints and ``prepare`` writes as report.json."""

    source: str
    kind: str
    rows_in: int
    rows_kept: int
    rows_rejected: int
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    examples: int
    train: int
    validation: int
    answers: int
    words_per_answer_mean: float
    words_per_answer_median: float
    total_words: int
    categories: dict[str, int] = Field(default_factory=dict)
    thresholds: ReadinessThresholds
    checks: list[Check]
    ready: bool

    def unmet(self) -> list[Check]:
        return [c for c in self.checks if not c.met]

    def summary(self) -> str:
        if self.ready:
            return f"ready: {self.answers} answers, {self.total_words} words"
        missing = ", ".join(f"{c.name} {c.value:g} < {c.minimum:g}" for c in self.unmet())
        return f"not ready: {missing}"

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def build_report(
    *,
    source: str,
    kind: str,
    rows_in: int,
    rows_kept: int,
    rejected_by_reason: dict[str, int],
    train: list[Example],
    validation: list[Example],
    thresholds: ReadinessThresholds,
) -> ReadinessReport:
    examples = [*train, *validation]
    words = [word_count(ex.answer) for ex in examples]
    categories: dict[str, int] = {}
    for ex in examples:
        if ex.category:
            categories[ex.category] = categories.get(ex.category, 0) + 1
    mean = statistics.fmean(words) if words else 0.0
    median = float(statistics.median(words)) if words else 0.0
    total = sum(words)
    t = thresholds
    checks = [
        Check(
            name="answers",
            value=len(examples),
            minimum=t.min_answers,
            met=len(examples) >= t.min_answers,
        ),
        Check(
            name="words per answer (mean)",
            value=round(mean, 1),
            minimum=t.min_words_per_answer,
            met=mean >= t.min_words_per_answer,
        ),
        Check(
            name="categories",
            value=len(categories),
            minimum=t.min_categories,
            met=len(categories) >= t.min_categories,
        ),
        Check(
            name="total words",
            value=total,
            minimum=t.min_total_words,
            met=total >= t.min_total_words,
        ),
    ]
    return ReadinessReport(
        source=source,
        kind=kind,
        rows_in=rows_in,
        rows_kept=rows_kept,
        rows_rejected=sum(rejected_by_reason.values()),
        rejected_by_reason=rejected_by_reason,
        examples=len(examples),
        train=len(train),
        validation=len(validation),
        answers=len(examples),
        words_per_answer_mean=round(mean, 2),
        words_per_answer_median=median,
        total_words=total,
        categories=dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
        thresholds=thresholds,
        checks=checks,
        ready=all(c.met for c in checks),
    )
