"""Built-in rewards and the ``hwkit rewards`` commands (``list``, ``pairs``).

Rewards (``hwkit.reward.Reward``): ``json_valid``, ``json_schema``, ``numeric_closeness``,
``regex``, ``length`` (text checks, in :mod:`.builtin`), ``reward_model`` (a local sequence
classifier), ``llm_judge`` (a local model grading through hwkit's generation runtimes) and
``columns`` (a weighted, normalised score from the data row's columns: the composite
engagement reward). :mod:`.composite` combines configured rewards with weights and
fallbacks; :mod:`.pairs` turns scored completions into DPO preference pairs.

Light at import: the reward modules are imported when the registry is filled, torch and
transformers only when a model-backed reward first scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import typer

    from hwkit.reward import Reward


@hookimpl
def hwkit_register_rewards(register: Register[type[Reward]]) -> None:
    from hwkit.plugins.rewards.builtin import (
        JsonSchemaReward,
        JsonValidReward,
        LengthReward,
        NumericClosenessReward,
        RegexReward,
    )
    from hwkit.plugins.rewards.columns import ColumnsReward
    from hwkit.plugins.rewards.llm_judge import LLMJudgeReward
    from hwkit.plugins.rewards.reward_model import RewardModelReward

    for cls in (
        JsonValidReward,
        JsonSchemaReward,
        NumericClosenessReward,
        RegexReward,
        LengthReward,
        RewardModelReward,
        LLMJudgeReward,
        ColumnsReward,
    ):
        register(cls)


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.rewards.cli import register

    register(cli)
