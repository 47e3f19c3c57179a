"""The Trainer contract: fit under a Plan, write artifacts, resume from checkpoints."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.runtime import Runtime


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    output_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


class Trainer(ABC):
    """A training workload (SFT, DPO, embedder fine-tuning).

    ``fit`` takes its batch, dtype and checkpointing from the Plan, never from guesses of
    its own, writes safetensors only, and with ``resume=True`` continues from the last
    complete checkpoint in ``output_dir`` with the same data order.

    ``run`` is what ``hwkit train NAME CONFIG`` calls: it validates ``config_model``,
    prepares data, asks the allocator for a Plan and calls ``fit``.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def fit(
        self,
        train: Any,
        *,
        plan: Plan,
        device: Device,
        output_dir: Path,
        eval_data: Any | None = None,
        resume: bool = False,
    ) -> TrainResult: ...

    @abstractmethod
    def run(self, config: BaseModel, *, runtime: Runtime, resume: bool = False) -> TrainResult:
        """Run a whole job from a validated config (data, plan, fit, artifacts)."""
