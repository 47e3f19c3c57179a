"""What the SFT and DPO trainers share: config -> data -> plan -> fit -> artifacts.

``run`` resolves the config against the active profile, prepares the data (or, on resume,
re-reads the prepared rows from the run directory so the data order is the same), asks
the allocator for a Plan and calls ``fit``. ``fit`` loads the model as the Plan says
(dtype, attention, quantisation), builds trl's trainer with the memory guard inside,
checkpoints atomically and writes the run directory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from hwkit import atomic
from hwkit.errors import ConfigError, UnavailableError, UsageError
from hwkit.log import get_logger
from hwkit import checkpoints as ckpt
from hwkit import rundir
from hwkit.plugins.trainers.config import TrainConfig, to_toml_dict
from hwkit.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import JobKind, Plan
    from hwkit.plugins.data import DataConfig
    from hwkit.runtime import Runtime

log = get_logger("hwkit.train")

BASELINE = "baseline.json"  # validation metrics before training (kept across resume)


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class HFTrainerPlugin(Trainer):
    """A hwkit Trainer on a trl trainer class. Subclasses name the job and build trl's parts."""

    job_kind: ClassVar[JobKind]  # the allocator's job kind for LoRA ("sft" or "dpo")
    paired_rows: ClassVar[bool] = False

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config: TrainConfig = (
            config if config is not None else cast(TrainConfig, self.config_model())
        )

    # -- what subclasses provide ------------------------------------------------------------
    @abstractmethod
    def default_data(self) -> DataConfig:
        """The data used when the config names none."""

    @abstractmethod
    def trl_args(self, common: dict[str, Any], plan: Plan) -> Any:
        """trl's config object (SFTConfig / DPOConfig) from the shared arguments."""

    @abstractmethod
    def trl_trainer(self, **kwargs: Any) -> Any:
        """trl's trainer (subclassed with the guard) from model, args, datasets, peft."""

    # -- run: config -> data -> plan -> fit --------------------------------------------------
    def resolve(self, config: TrainConfig, runtime: Runtime) -> TrainConfig:
        """Fill ``None`` fields from the active profile; the result goes to config.toml."""
        training = runtime.active_profile.profile.training
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

    def run(self, config: Any, *, runtime: Runtime, resume: bool = False) -> TrainResult:
        from hwkit.models import resolve_model

        config = self.resolve(config, runtime)
        self.config = config
        out = Path(config.output_dir)
        rank, _ = world()
        model_dir = resolve_model(config.model)
        train, validation, data_report = self._data(config, out, resume=resume, rank=rank)
        plan = self.make_plan(config, model_dir, runtime, rows=len(train))
        device = self._device(plan, runtime)
        if rank == 0:
            atomic.write_json_atomic(out / rundir.PLAN, plan.model_dump(mode="json"))
            rundir.write_toml_atomic(out / rundir.CONFIG, to_toml_dict(config))
        self._data_report = data_report
        return self.fit(
            train, plan=plan, device=device, output_dir=out, eval_data=validation, resume=resume
        )

    def _data(
        self, config: TrainConfig, out: Path, *, resume: bool, rank: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        train_path, val_path = out / rundir.TRAIN_DATA, out / rundir.VALIDATION_DATA
        if resume and train_path.is_file():
            # The same rows in the same order as the interrupted run, whatever the source does now.
            reports = rundir.read_jsonl(out / ".data-report.jsonl")
            return (
                rundir.read_jsonl(train_path),
                rundir.read_jsonl(val_path),
                reports[0] if reports else {},
            )
        if (
            not resume
            and rank == 0
            and ckpt.checkpoints(out / rundir.CHECKPOINTS, complete_only=False)
        ):
            raise UsageError(
                f"run directory {out} already holds checkpoints",
                hint="pass --resume to continue it, or choose another output_dir",
            )
        from hwkit.plugins.data import prepare

        assert config.data is not None
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            rejects = (out if rank == 0 else Path(scratch)) / rundir.REJECTS
            data = prepare(config.data, rejects_path=rejects)
        if not data.train:
            raise ConfigError(
                f"{config.data.source}: no training rows left after preparation "
                f"({data.report.rows_rejected if hasattr(data.report, 'rows_rejected') else '?'} "
                f"rejected; see {out / rundir.REJECTS})",
                hint="check the column mapping and the rejects file",
            )
        report = data.report.to_json_dict()
        if rank == 0:
            atomic.write_jsonl_atomic(train_path, data.train)
            atomic.write_jsonl_atomic(val_path, data.validation)
            atomic.write_jsonl_atomic(out / ".data-report.jsonl", [report])
        return data.train, data.validation, report

    def make_plan(
        self, config: TrainConfig, model_dir: Path, runtime: Runtime, *, rows: int
    ) -> Plan:
        from hwkit.allocator import Job, ModelSpec, plan

        _, world_size = world()
        kind: JobKind = "full" if config.method == "full" else self.job_kind
        quant = "nf4" if config.method == "qlora" else config.quantization
        per_process = max(1, math.ceil(config.effective_batch / world_size))
        job = Job(
            kind=kind,
            model=ModelSpec.from_pretrained(model_dir),
            seq_len=int(config.max_seq_len or 512),
            effective_batch=per_process,
            lora_rank=None if kind == "full" else config.lora_rank,
            quantization=quant,
            gradient_checkpointing=config.gradient_checkpointing,
            micro_batch=config.micro_batch,
        )
        devices = [runtime.device(config.device)] if config.device else None
        return plan(job, devices=devices, runtime=runtime)

    @staticmethod
    def _device(plan: Plan, runtime: Runtime) -> Device:
        if not plan.present:
            raise UnavailableError(
                f"the plan is for {plan.device_name or plan.device} (profile {plan.profile}), "
                "which is not in this machine",
                hint="unset HWKIT_PROFILE / --profile to train on the hardware present",
            )
        return runtime.device(plan.device)

    # -- fit: model + trl trainer under the plan ------------------------------------------------
    def load_model(self, model_dir: Path, plan: Plan, device: Device) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {
            "local_files_only": True,
            "attn_implementation": plan.attention,
        }
        if plan.quantization in ("nf4", "int8"):
            from transformers import BitsAndBytesConfig

            compute = getattr(torch, plan.dtype if plan.dtype != "float32" else "bfloat16")
            kwargs["quantization_config"] = (
                BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_compute_dtype=compute,
                    bnb_4bit_use_double_quant=True,
                )
                if plan.quantization == "nf4"
                else BitsAndBytesConfig(load_in_8bit=True)
            )
            kwargs["device_map"] = {"": str(device.torch_device())}
            kwargs["dtype"] = compute
        else:
            # LoRA trains float32 adapters on a base in the plan's dtype (autocast does the rest).
            base_dtype = plan.dtype if config_is_lora(self.config) else "float32"
            kwargs["dtype"] = getattr(torch, base_dtype)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
        if plan.quantization == "none":
            model = device.place(model)
        return model

    def peft_config(self) -> Any:
        if not config_is_lora(self.config):
            return None
        from peft import LoraConfig

        cfg = self.config
        return LoraConfig(
            r=int(cfg.lora_rank or 8),
            lora_alpha=int(cfg.lora_alpha or 2 * (cfg.lora_rank or 8)),
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            task_type="CAUSAL_LM",
        )

    def common_args(
        self, plan: Plan, device: Device, output_dir: Path, has_eval: bool
    ) -> dict[str, Any]:
        cfg = self.config
        torch_device = device.torch_device()
        on_cpu = torch_device is not None and torch_device.type == "cpu"
        eval_on = has_eval and cfg.eval_steps is not None
        return {
            "output_dir": str(output_dir / rundir.CHECKPOINTS),
            "per_device_train_batch_size": plan.micro_batch,
            "per_device_eval_batch_size": plan.micro_batch,
            "gradient_accumulation_steps": plan.grad_accum,
            "gradient_checkpointing": plan.gradient_checkpointing,
            "learning_rate": cfg.learning_rate,
            "lr_scheduler_type": cfg.lr_scheduler,
            "warmup_steps": cfg.warmup_steps,
            "weight_decay": cfg.weight_decay,
            "num_train_epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "logging_steps": cfg.logging_steps,
            "save_strategy": "steps",
            "save_steps": cfg.save_steps,
            "save_total_limit": None,  # hwkit rotates after the completeness marker
            "eval_strategy": "steps" if eval_on else "no",
            "eval_steps": cfg.eval_steps if eval_on else None,
            "seed": cfg.seed,
            "data_seed": cfg.seed,
            "report_to": cfg.report_to,
            "bf16": plan.dtype == "bfloat16" and plan.quantization == "none",
            "fp16": plan.dtype == "float16" and plan.quantization == "none",
            "use_cpu": on_cpu,
            "disable_tqdm": True,
            "dataloader_num_workers": 0,
            "max_length": plan.max_seq_len,
            "ddp_backend": "gloo" if on_cpu and world()[1] > 1 else None,
            "ddp_find_unused_parameters": False,
        }

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
        from datasets import Dataset
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from hwkit.allocator import MemoryGuard
        from hwkit.models import resolve_model
        from hwkit.plugins.trainers.callbacks import (
            CompleteCheckpoints,
            GuardCallback,
            MetricsCallback,
        )
        from hwkit.plugins.trainers.metrics import TokenCounter, truncate_metrics

        rank, _ = world()
        output_dir = Path(output_dir).absolute()
        output_dir.mkdir(parents=True, exist_ok=True)
        folder = output_dir / rundir.CHECKPOINTS
        metrics_path = output_dir / rundir.METRICS
        start_from: Path | None = None
        if resume:
            if rank == 0:
                ckpt.remove_incomplete(folder)
            start_from = ckpt.latest_complete(folder)
            if start_from is None:
                log.warning("train.resume_without_checkpoint", run=str(output_dir))
            if rank == 0:
                truncate_metrics(metrics_path, ckpt.step_of(start_from) or 0 if start_from else 0)
        elif rank == 0:
            metrics_path.unlink(missing_ok=True)

        train_ds = train if isinstance(train, Dataset) else Dataset.from_list(list(train))
        eval_ds = None
        if eval_data is not None and len(eval_data):
            rows = (
                eval_data if isinstance(eval_data, Dataset) else Dataset.from_list(list(eval_data))
            )
            eval_ds = rows.select(range(min(len(rows), self.config.eval.max_rows)))

        model_dir = resolve_model(self.config.model)
        model = self.load_model(model_dir, plan, device)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        args = self.trl_args(self.common_args(plan, device, output_dir, eval_ds is not None), plan)
        guard = MemoryGuard(device, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum)
        tokens = TokenCounter()
        trainer = self.trl_trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=self.peft_config(),
        )
        trainer.hwkit_guard = guard
        trainer.hwkit_tokens = tokens
        trainer.hwkit_paired_rows = self.paired_rows
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainer.add_callback(MetricsCallback(metrics_path, device, tokens, run=f"{self.name}"))
        trainer.add_callback(CompleteCheckpoints(folder, self.config.save_total_limit))
        trainer.add_callback(GuardCallback(guard))

        baseline_path = output_dir / BASELINE
        baseline: dict[str, Any] = {}
        if eval_ds is not None:
            if start_from is not None and baseline_path.is_file():
                import json

                baseline = json.loads(baseline_path.read_text())
            else:
                baseline = _plain(trainer.evaluate(metric_key_prefix="eval"))
                if rank == 0:
                    atomic.write_json_atomic(baseline_path, baseline)
        log.info(
            "train.start",
            trainer=self.name,
            plan=plan.model_dump(exclude={"estimate", "reasons"}),
            rows=len(train_ds),
            resume_from=str(start_from) if start_from else None,
        )
        result = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
        final_eval = (
            _plain(trainer.evaluate(metric_key_prefix="eval")) if eval_ds is not None else {}
        )

        artifacts: dict[str, Path] = {}
        if rank == 0:
            artifacts = self._save(trainer, tokenizer, output_dir)
            from hwkit.plugins.trainers.metrics import plot_loss

            png = plot_loss(metrics_path, output_dir / rundir.LOSS_PNG, title=f"{self.name} loss")
            if png is not None:
                artifacts["loss_png"] = png
        steps = int(trainer.state.global_step)
        report = {
            "trainer": self.name,
            "model": self.config.model,
            "base_model_dir": str(model_dir),
            "method": self.config.method,
            "steps": steps,
            "train": _plain(result.metrics),
            "tokens": tokens.tokens,
            "eval_before": baseline,
            "eval_after": final_eval,
            "plan": {
                "device": plan.device,
                "dtype": plan.dtype,
                "micro_batch": plan.micro_batch,
                "grad_accum": plan.grad_accum,
                "profile": plan.profile,
            },
            "guard_decisions": [d.to_dict() for d in guard.decisions],
            "final_micro_batch": guard.micro_batch,
            "final_grad_accum": guard.grad_accum,
            "resumed_from": str(start_from) if start_from else None,
            "world_size": world()[1],
            "data": getattr(self, "_data_report", {}),
        }
        if rank == 0:
            artifacts["report"] = atomic.write_json_atomic(output_dir / rundir.REPORT, report)
            for name in (rundir.PLAN, rundir.CONFIG, rundir.METRICS, rundir.REJECTS):
                if (output_dir / name).is_file():
                    artifacts[name] = output_dir / name
        metrics = {
            k: float(v)
            for k, v in {**_plain(result.metrics), **final_eval}.items()
            if isinstance(v, int | float)
        }
        log.info(
            "train.done",
            trainer=self.name,
            steps=steps,
            run=str(output_dir),
            eval_loss=final_eval.get("eval_loss"),
        )
        return TrainResult(output_dir=output_dir, steps=steps, metrics=metrics, artifacts=artifacts)

    def _save(self, trainer: Any, tokenizer: Any, output_dir: Path) -> dict[str, Path]:
        """Adapter (or full) weights and tokenizer into the run directory, file by file
        through a temp folder so a killed save never leaves a torn weights file."""
        staging = Path(tempfile.mkdtemp(prefix=".final-", dir=output_dir))
        try:
            trainer.save_model(str(staging))
            tokenizer.save_pretrained(str(staging))
            if self.config.merge and config_is_lora(self.config):
                merged = trainer.model.merge_and_unload()
                merged.save_pretrained(str(staging / "merged"))
                tokenizer.save_pretrained(str(staging / "merged"))
            saved: dict[str, Path] = {}
            for item in staging.iterdir():
                if item.name in ("README.md", "training_args.bin"):  # a pickle; never shipped
                    continue
                dest = output_dir / item.name
                if dest.is_dir():
                    shutil.rmtree(dest)
                os.replace(item, dest)
                saved[item.name] = dest
            return saved
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def config_is_lora(config: TrainConfig) -> bool:
    return config.method in ("lora", "qlora")


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in (metrics or {}).items()}
