"""The ``dpo`` trainer: LoRA DPO through trl's DPOTrainer; the reference model is the same
network with the adapter disabled (``ref_model=None``), so no second copy is held."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.plugins.trainers.base import HFTrainerPlugin
from hwkit.plugins.trainers.config import DPOConfig

if TYPE_CHECKING:
    from hwkit.plan import Plan
    from hwkit.plugins.data import DataConfig


class DPOTrainerPlugin(HFTrainerPlugin):
    """Preference optimisation on {prompt, chosen, rejected} pairs."""

    name = "dpo"
    config_model: ClassVar[type[DPOConfig]] = DPOConfig
    job_kind = "dpo"
    paired_rows = True
    data_hint = 'preference records, e.g. [data] source = "pairs.jsonl", kind = "preference"'

    def default_data(self) -> DataConfig | None:
        return None  # no bundled preference set: the config names its pairs

    def trl_args(self, common: dict[str, Any], plan: Plan) -> Any:
        from trl import DPOConfig as TrlDPOConfig

        beta = float(getattr(self.config, "beta", 0.1))
        return TrlDPOConfig(**common, beta=beta)

    def trl_trainer(self, **kwargs: Any) -> Any:
        from trl import DPOTrainer

        from hwkit.plugins.trainers.guarded import GuardedMixin

        class GuardedDPOTrainer(GuardedMixin, DPOTrainer):
            pass

        return GuardedDPOTrainer(ref_model=None, **kwargs)
