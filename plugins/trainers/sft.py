"""The ``sft`` trainer: LoRA, QLoRA (where the backend has 4-bit kernels) or full fine-tuning
on chat messages, through trl's SFTTrainer with the memory guard inside."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.errors import ConfigError
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


def split_last_reply(
    messages: list[dict[str, str]],
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(the conversation before its last assistant reply, that reply and anything after)."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    if last < 1:
        raise ConfigError(
            "completion_only_loss needs rows whose messages end with an assistant reply after "
            f"a prompt (got roles {[m.get('role') for m in messages]})",
            hint="set completion_only_loss = false, or give each row a user turn and a reply",
        )
    return messages[:last], messages[last:]


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
        only = bool(getattr(self.config, "completion_only_loss", False))
        return TrlSFTConfig(
            **common, packing=packing, packing_strategy="bfd", completion_only_loss=only
        )

    def _datasets(self, train: Any, eval_data: Any | None) -> tuple[Any, Any | None]:
        """With ``completion_only_loss`` each conversation becomes trl's conversational
        prompt/completion pair, split before its last assistant reply, so only that reply's
        tokens carry loss (run files keep the messages as they were)."""
        train_ds, eval_ds = super()._datasets(train, eval_data)
        if not getattr(self.config, "completion_only_loss", False):
            return train_ds, eval_ds

        def split(row: dict[str, Any]) -> dict[str, Any]:
            prompt, completion = split_last_reply(row["messages"])
            return {"prompt": prompt, "completion": completion}

        cols = train_ds.column_names
        train_ds = train_ds.map(split, remove_columns=cols)
        if eval_ds is not None:
            eval_ds = eval_ds.map(split, remove_columns=eval_ds.column_names)
        return train_ds, eval_ds

    def trl_trainer(self, **kwargs: Any) -> Any:
        from trl import SFTTrainer

        from hwkit.plugins.trainers.guarded import GuardedMixin

        class GuardedSFTTrainer(GuardedMixin, SFTTrainer):
            pass

        return GuardedSFTTrainer(**kwargs)
