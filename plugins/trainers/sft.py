"""The ``sft`` trainer: LoRA, QLoRA (where the backend has 4-bit kernels) or full fine-tuning
on chat messages, through trl's SFTTrainer with the memory guard inside."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.plugins.trainers.base import HFTrainerPlugin
from hwkit.plugins.trainers.config import SFTConfig

if TYPE_CHECKING:
    from hwkit.plan import Plan
    from hwkit.plugins.data import DataConfig


def persona_data() -> DataConfig:
    """The bundled persona sample, read through the SQLite source (the quickstart's data)."""
    from hwkit.plugins.data import DataConfig
    from hwkit.plugins.data.samples import PERSONA_QUERY, PERSONA_SYSTEM_PROMPT, persona_sqlite_url

    return DataConfig(
        source=persona_sqlite_url(),
        query=PERSONA_QUERY,
        kind="sft",
        system_prompt=PERSONA_SYSTEM_PROMPT,
    )


class SFTTrainerPlugin(HFTrainerPlugin):
    """Supervised fine-tuning; packs short examples into full rows (BFD) by default."""

    name = "sft"
    config_model: ClassVar[type[SFTConfig]] = SFTConfig
    job_kind = "sft"

    def default_data(self) -> DataConfig:
        return persona_data()

    def trl_args(self, common: dict[str, Any], plan: Plan) -> Any:
        from trl import SFTConfig as TrlSFTConfig

        packing = bool(getattr(self.config, "packing", True))
        return TrlSFTConfig(**common, packing=packing, packing_strategy="bfd")

    def trl_trainer(self, **kwargs: Any) -> Any:
        from trl import SFTTrainer

        from hwkit.plugins.trainers.guarded import GuardedMixin

        class GuardedSFTTrainer(GuardedMixin, SFTTrainer):
            pass

        return GuardedSFTTrainer(**kwargs)
