"""Built-in trainers (sft, dpo, grpo, embedder, cross-encoder) and the ``hwkit train``,
``hwkit eval`` and ``hwkit quickstart`` commands, registered through the same ``hwkit``
entry point a third party uses.

Heavy libraries (torch, transformers, trl, peft) are imported inside the trainers' methods,
so loading the plugin (``hwkit plugins``, ``hwkit --help``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import typer

    from hwkit.trainer import Trainer


@hookimpl
def hwkit_register_trainers(register: Register[type[Trainer]]) -> None:
    from hwkit.plugins.trainers.cross_encoder import CrossEncoderTrainer
    from hwkit.plugins.trainers.dpo import DPOTrainerPlugin
    from hwkit.plugins.trainers.embedder import EmbedderTrainer
    from hwkit.plugins.trainers.grpo import GRPOTrainerPlugin
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin

    register(SFTTrainerPlugin)
    register(DPOTrainerPlugin)
    register(GRPOTrainerPlugin)
    register(EmbedderTrainer)
    register(CrossEncoderTrainer)


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.trainers.cli import register as register_train
    from hwkit.plugins.trainers.quickstart import register as register_quickstart

    register_train(cli)
    register_quickstart(cli)
