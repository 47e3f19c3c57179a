"""The Trainer contract: phases the core's job flow calls in order (``hwkit.jobs.train``).

Modelled on torchtune's recipe interface: each phase owns one thing, and the flow between
them (plan, device, run directory) is the core's, never the trainer's.

1. ``resolve(config, profile)`` fills what the config leaves to the hardware (LoRA rank,
   sequence length) from the active profile; the result is what ``config.toml`` records.
2. ``prepare(config, run_dir, resume=)`` reads the data into :class:`TrainingData`, keeps
   rejects in the run directory and, on resume, reads back the rows the interrupted run
   used, in its order.
3. ``job(config, data)`` says what the allocator plans: kind, model sizes, sequence
   length, effective batch, adapter and quantisation wishes.
4. ``fit(train, plan=, device=, output_dir=, eval_data=, resume=)`` trains under the plan on the
   device (batch, dtype, checkpointing from the plan), checkpoints with
   :mod:`hwkit.checkpoints`, writes safetensors artefacts and returns a TrainResult.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from hwkit.allocator import Job
    from hwkit.device import Device
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.plan import Plan


class JobConfig(BaseModel):
    """Fields the core's job flow reads from every trainer's config."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path = Field(Path("runs/train"), description="the run directory")
    device: str | None = Field(None, description="device id such as cuda:1; None: the plan's")


@dataclass
class TrainingData:
    """What ``prepare`` read: training rows, held-out rows, and a report for the run dir."""

    train: Sequence[Any]
    eval: Sequence[Any] | None = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    output_dir: Path
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)


class Trainer(ABC):
    """A training workload (SFT, DPO, embedder fine-tuning, a plugin's own)."""

    name: ClassVar[str]
    config_model: ClassVar[type[JobConfig]]

    def resolve(self, config: Any, profile: HardwareProfile) -> Any:
        """The config with the hardware's defaults filled in (default: unchanged)."""
        return config

    @abstractmethod
    def prepare(self, config: Any, run_dir: Path, *, resume: bool) -> TrainingData:
        """The training data (and any evaluation data) this run uses."""

    @abstractmethod
    def job(self, config: Any, data: TrainingData) -> Job:
        """The allocator's job for this config and data."""

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
    ) -> TrainResult:
        """Train under ``plan`` on ``device``; artefacts and checkpoints in ``output_dir``."""
