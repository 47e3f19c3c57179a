"""The ``llm_judge`` reward: a local model grades each completion from 0 to 10.

The judge is any model or run hwkit can generate with (``hwkit.jobs.load_generator``: the
allocator plans it onto a device and picks the runtime, transformers, llama.cpp or
OpenVINO), loaded on first use and freed by ``close``. Its prompt is ``template`` with
``{prompt}`` and ``{completion}`` replaced (other braces are left alone, so a template may
show JSON). The first number in its reply, divided by 10, is the reward; a reply with no
number, or one outside 0-10, raises, so the composite's fallback applies to that
completion (``score_batch`` returns NaN for it, which the composite treats the same).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field, field_validator

from hwkit.errors import ConfigError, UsageError
from hwkit.log import get_logger
from hwkit.reward import SETUP_ERRORS, Reward, RewardOptions, check_lengths

log = get_logger("hwkit.rewards")

DEFAULT_TEMPLATE = (
    "Grade the response to the request below from 0 (useless or wrong) to 10 (perfect).\n"
    "Reply with the grade only, a single number.\n\n"
    "Request:\n{prompt}\n\nResponse:\n{completion}\n\nGrade (0-10):"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class LLMJudgeOptions(RewardOptions):
    model: str = Field(description="a local model name, directory, GGUF file or run")
    template: str = DEFAULT_TEMPLATE
    system: str | None = Field(None, description="a system message for the judge")
    max_new_tokens: int = Field(8, ge=1)
    context: int = Field(2048, ge=64, description="prompt plus reply tokens to plan for")
    runtimes: list[str] = Field(default_factory=list, description="acceptable runtimes, in order")
    device: str | None = Field(None, description="a device id (default: the plan's choice)")
    runtime: Any = Field(None, description="a hwkit Runtime (programs and tests, not TOML)")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        if "{completion}" not in value:
            raise ValueError("the template must contain {completion}")
        return value


def parse_grade(text: str) -> float:
    """The first number of a judge's reply on a 0-1 scale; ValueError without one in 0-10."""
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"the judge gave no grade: {text[:80]!r}")
    grade = float(match.group(0))
    if not 0.0 <= grade <= 10.0:
        raise ValueError(f"the judge's grade {grade:g} is outside 0-10: {text[:80]!r}")
    return grade / 10.0


class LLMJudgeReward(Reward):
    """A local model's 0-10 grade of the completion, divided by 10."""

    name = "llm_judge"
    description = "a local model grades the completion 0-10 (through hwkit's runtimes), /10"
    options_model = LLMJudgeOptions
    options: LLMJudgeOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.generator: Any = None
        self.replies: list[str] = []  # the judge's replies of the last batch

    def load(self) -> Any:
        if self.generator is None:
            from hwkit.jobs import load_generator

            opts = self.options
            try:
                self.generator = load_generator(
                    opts.model,
                    runtime=opts.runtime,
                    device=opts.device,
                    context=opts.context,
                    runtimes=tuple(opts.runtimes),
                )
            except UsageError as exc:  # a runtime that cannot load it: the config's fault
                raise ConfigError(f"reward 'llm_judge': {exc.message}", hint=exc.hint) from None
        return self.generator

    def judge_prompt(self, prompt: str, completion: str) -> str:
        return self.options.template.replace("{prompt}", prompt).replace("{completion}", completion)

    def reply(self, prompt: str, completion: str) -> str:
        """The judge's raw reply for one completion."""
        from hwkit.inference import GenerationParams

        generator = self.load()
        messages = []
        if self.options.system:
            messages.append({"role": "system", "content": self.options.system})
        messages.append({"role": "user", "content": self.judge_prompt(prompt, completion)})
        tokens = self.options.max_new_tokens
        rendered = generator.prompt(messages, tokens)
        return str(generator.generate(rendered, GenerationParams(max_new_tokens=tokens)).text)

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return parse_grade(self.reply(prompt, completion))

    def score_batch(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        """One grade per completion; NaN where the judge gave none (so a composite counts
        it and applies the fallback without asking the judge again)."""
        check_lengths(prompts, completions, rows)
        self.load()  # a judge that cannot load fails the batch, not each completion
        out: list[float] = []
        self.replies = []
        for prompt, completion in zip(prompts, completions, strict=True):
            text = ""
            try:
                text = self.reply(prompt, completion)
                out.append(parse_grade(text))
            except SETUP_ERRORS:
                raise
            except Exception as exc:
                log.debug("reward.llm_judge.no_grade", error=str(exc)[:200])
                out.append(math.nan)
            self.replies.append(text)
        return out

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None
