"""What the SFT and DPO trainers share: the Trainer phases the core's job flow calls.

``hwkit.jobs.train`` runs them in order and owns the rest (plan, device, run directory
files, the checkpoint guard). ``resolve`` fills hardware defaults from the profile,
``prepare`` reads the data (or, on resume, the rows the interrupted run used, in its
order), ``job`` says what the allocator plans, and ``fit`` trains under the Plan with the
modelling (:mod:`.modelling`) and reporting (:mod:`.reporting`) helpers.
"""

from __future__ import annotations

import math
import tempfile
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from hwkit import atomic, rundir
from hwkit import checkpoints as ckpt
from hwkit.errors import ConfigError
from hwkit.jobs import world
from hwkit.log import get_logger
from hwkit.plugins.trainers.config import TrainConfig
from hwkit.trainer import Trainer, TrainingData, TrainResult

if TYPE_CHECKING:
    from hwkit.allocator import Job
    from hwkit.device import Device
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.plan import JobKind, Plan
    from hwkit.plugins.data import DataConfig

log = get_logger("hwkit.train")

DATA_REPORT = ".data-report.jsonl"  # the data report of the first run, for resumed ones


class HFTrainerPlugin(Trainer):
    """A hwkit Trainer on a trl trainer class. Subclasses name the job and build trl's parts."""

    job_kind: ClassVar[JobKind]  # the allocator's job kind for LoRA ("sft" or "dpo")
    paired_rows: ClassVar[bool] = False
    data_hint: ClassVar[str] = 'e.g. [data] source = "rows.jsonl"'

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config: TrainConfig = (
            config if config is not None else cast(TrainConfig, self.config_model())
        )
        self.data_report: dict[str, Any] = {}

    # -- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def default_data(self) -> DataConfig | None:
        """The data used when the config names none (None: the config must name it)."""

    @abstractmethod
    def trl_args(self, common: dict[str, Any], plan: Plan) -> Any:
        """trl's config object (SFTConfig / DPOConfig) from the shared arguments."""

    @abstractmethod
    def trl_trainer(self, **kwargs: Any) -> Any:
        """trl's trainer (subclassed with the guard) from model, args, datasets, peft."""

    # -- the phases ---------------------------------------------------------------------------
    def resolve(self, config: TrainConfig, profile: HardwareProfile) -> TrainConfig:
        """Fill ``None`` fields from the active profile; the result goes to config.toml."""
        training = profile.training
        update: dict[str, Any] = {"output_dir": Path(config.output_dir).expanduser().absolute()}
        if config.lora_rank is None and config.method != "full":
            update["lora_rank"] = training.lora_rank
        if config.lora_alpha is None and config.method != "full":
            update["lora_alpha"] = 2 * (update.get("lora_rank") or config.lora_rank or 8)
        if config.max_seq_len is None:
            update["max_seq_len"] = min(training.max_seq_len, 1024)
        if config.data is None:
            update["data"] = self.default_data()
        return config.model_copy(update=update)

    def prepare(self, config: TrainConfig, run_dir: Path, *, resume: bool) -> TrainingData:
        """Train and validation rows, written to the run directory (rank 0) with the rejects;
        on resume, the rows the interrupted run used, in its order."""
        from hwkit.models import resolve_model

        self.config = config
        resolve_model(config.model)  # a missing model fails before any data is read
        rank, _ = world()
        train_path, val_path = run_dir / rundir.TRAIN_DATA, run_dir / rundir.VALIDATION_DATA
        if resume and train_path.is_file():
            # The same rows in the same order as the interrupted run, whatever the source does now.
            reports = rundir.read_jsonl(run_dir / DATA_REPORT)
            self.data_report = reports[0] if reports else {}
            return TrainingData(
                rundir.read_jsonl(train_path), rundir.read_jsonl(val_path), self.data_report
            )
        if config.data is None:
            raise ConfigError(f"the {self.name} trainer needs a [data] table", hint=self.data_hint)
        from hwkit.plugins.data import prepare

        with tempfile.TemporaryDirectory() as scratch:
            rejects = (run_dir if rank == 0 else Path(scratch)) / rundir.REJECTS
            data = prepare(config.data, rejects_path=rejects)
        if not data.train:
            raise ConfigError(
                f"{config.data.source}: no training rows left after preparation "
                f"({data.report.rows_rejected} rejected; see {run_dir / rundir.REJECTS})",
                hint="check the column mapping and the rejects file",
            )
        self.data_report = data.report.to_json_dict()
        if rank == 0:
            atomic.write_jsonl_atomic(train_path, data.train)
            atomic.write_jsonl_atomic(val_path, data.validation)
            atomic.write_jsonl_atomic(run_dir / DATA_REPORT, [self.data_report])
        return TrainingData(data.train, data.validation, self.data_report)

    def job(self, config: TrainConfig, data: TrainingData) -> Job:
        """LoRA (``job_kind``), QLoRA (nf4 base) or full fine-tuning of the config's model;
        under DDP each process plans its share of the effective batch."""
        from hwkit.allocator import Job, ModelSpec
        from hwkit.models import resolve_model

        _, world_size = world()
        kind: JobKind = "full" if config.method == "full" else self.job_kind
        return Job(
            kind=kind,
            model=ModelSpec.from_pretrained(resolve_model(config.model)),
            seq_len=int(config.max_seq_len or 512),
            effective_batch=max(1, math.ceil(config.effective_batch / world_size)),
            lora_rank=None if kind == "full" else config.lora_rank,
            quantization="nf4" if config.method == "qlora" else config.quantization,
            gradient_checkpointing=config.gradient_checkpointing,
            micro_batch=config.micro_batch,
            lora_dropout=kind != "full" and config.lora_dropout > 0,
        )

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
        """trl's trainer under the plan with the memory guard inside; weights, loss plot and
        report.json in ``output_dir``."""
        from hwkit.allocator import MemoryGuard
        from hwkit.models import resolve_model
        from hwkit.plugins.trainers import modelling, reporting
        from hwkit.plugins.trainers.metrics import TokenCounter

        cfg = self.config
        rank, world_size = world()
        output_dir = Path(output_dir).absolute()
        output_dir.mkdir(parents=True, exist_ok=True)
        start_from = self._resume_point(output_dir, resume=resume, rank=rank)
        train_ds, eval_ds = self._datasets(train, eval_data)

        model_dir = resolve_model(cfg.model)
        lora = modelling.is_lora(cfg)
        guard = MemoryGuard(device, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum)
        tokens = TokenCounter()
        tokenizer = modelling.load_tokenizer(model_dir)
        has_eval = eval_ds is not None
        common = modelling.trl_arguments(cfg, plan, device, output_dir, has_eval=has_eval)
        trainer = modelling.guarded_trainer(
            self.trl_trainer,
            guard=guard,
            tokens=tokens,
            paired_rows=self.paired_rows,
            device=device,
            output_dir=output_dir,
            keep_checkpoints=cfg.save_total_limit,
            run=self.name,
            model=modelling.load_model(model_dir, plan, device, lora=lora),
            args=self.trl_args(common, plan),
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=modelling.peft_config(cfg),
        )
        self.ready(trainer, plan)
        measure = self.held_out(trainer, eval_ds)
        before: dict[str, Any] = {}
        if measure is not None:
            before = reporting.baseline(
                measure, output_dir, resumed=start_from is not None, write=rank == 0
            )
        log.info(
            "train.fit",
            trainer=self.name,
            rows=len(train_ds),
            resume_from=str(start_from) if start_from else None,
        )
        outcome = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        after = measure() if measure is not None else {}
        steps = int(trainer.state.global_step)
        train_metrics = reporting.plain(outcome.metrics)

        artifacts: dict[str, Path] = {}
        if rank == 0:
            artifacts = reporting.save_artifacts(
                trainer,
                tokenizer,
                output_dir,
                merge=cfg.merge and lora,
                title=f"{self.name} loss",
            )
            report = {
                "trainer": self.name,
                "model": cfg.model,
                "base_model_dir": str(model_dir),
                "method": cfg.method,
                "steps": steps,
                "train": train_metrics,
                "tokens": tokens.tokens,
                "eval_before": before,
                "eval_after": after,
                "plan": reporting.plan_summary(plan),
                **reporting.guard_summary(guard),
                "resumed_from": str(start_from) if start_from else None,
                "world_size": world_size,
                "data": self.data_report,
            }
            artifacts.update(reporting.write_report(output_dir, report))
        log.info(
            "train.done",
            trainer=self.name,
            steps=steps,
            run=str(output_dir),
            eval_loss=after.get("eval_loss"),
        )
        return reporting.result(
            output_dir, steps, train_metrics=train_metrics, final_eval=after, artifacts=artifacts
        )

    # -- fit's parts ----------------------------------------------------------------------------
    def ready(self, trainer: Any, plan: Plan) -> None:
        """Called once trl's trainer is built, before the baseline and training."""

    def held_out(self, trainer: Any, eval_ds: Any | None) -> Callable[[], dict[str, Any]] | None:
        """What measures the model on held-out rows, before and after training (None: no
        held-out rows); trl's ``evaluate`` (loss, DPO's reward accuracy) by default."""
        from hwkit.plugins.trainers import reporting

        if eval_ds is None:
            return None
        return lambda: reporting.evaluation(trainer)

    @staticmethod
    def _resume_point(output_dir: Path, *, resume: bool, rank: int) -> Path | None:
        """The last complete checkpoint to resume from (torn ones removed, metrics cut back
        to its step); None for a fresh run, whose old metrics are cleared."""
        from hwkit.plugins.trainers.metrics import truncate_metrics

        folder, metrics = output_dir / rundir.CHECKPOINTS, output_dir / rundir.METRICS
        if not resume:
            if rank == 0:
                metrics.unlink(missing_ok=True)
            return None
        if rank == 0:
            ckpt.remove_incomplete(folder)
        start_from = ckpt.latest_complete(folder)
        if start_from is None:
            # steps logged but none saved are lost work; nothing logged is a fresh start (a
            # pipeline hands its rows to a new run this way)
            lost = metrics.is_file() and metrics.stat().st_size > 0
            (log.warning if lost else log.info)(
                "train.resume_without_checkpoint", run=str(output_dir)
            )
        if rank == 0:
            truncate_metrics(metrics, (ckpt.step_of(start_from) or 0) if start_from else 0)
        return start_from

    def _datasets(self, train: Any, eval_data: Any | None) -> tuple[Any, Any | None]:
        """datasets.Dataset views of the rows; the validation rows capped at eval.max_rows."""
        from datasets import Dataset

        train_ds = train if isinstance(train, Dataset) else Dataset.from_list(_trl_rows(train))
        if eval_data is None or not len(eval_data):
            return train_ds, None
        rows = (
            eval_data if isinstance(eval_data, Dataset) else Dataset.from_list(_trl_rows(eval_data))
        )
        return train_ds, rows.select(range(min(len(rows), self.config.eval.max_rows)))


def _trl_rows(rows: Any) -> list[dict[str, Any]]:
    """Rows for trl's SFT and DPO trainers: without the source columns the data kept for
    rewards (``mapping.keep``), which these trainers do not read."""
    from hwkit.plugins.data.sft import KEPT

    return [{k: v for k, v in row.items() if k != KEPT} for row in rows]
