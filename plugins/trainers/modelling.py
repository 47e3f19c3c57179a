"""The modelling side of the SFT and DPO trainers: the model loaded as the Plan says (dtype,
attention, quantisation), the LoRA config, trl's arguments, and trl's trainer with the
memory guard inside and hwkit's callbacks attached.

Everything here follows the Plan handed to ``fit``; nothing picks a device or a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit import rundir
from hwkit.jobs import world

if TYPE_CHECKING:
    from hwkit.allocator import MemoryGuard
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.config import TrainConfig
    from hwkit.plugins.trainers.metrics import TokenCounter


def is_lora(config: TrainConfig) -> bool:
    """Whether the run trains an adapter (LoRA or QLoRA) rather than every weight."""
    return config.method in ("lora", "qlora")


def load_model(model_dir: Path, plan: Plan, device: Device, *, lora: bool) -> Any:
    """The causal LM in the plan's dtype and attention, quantised when the plan says so,
    on ``device``. LoRA trains float32 adapters on a base in the plan's dtype (autocast does
    the rest); full fine-tuning keeps float32 master weights."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True, "attn_implementation": plan.attention}
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
        kwargs["dtype"] = getattr(torch, plan.dtype if lora else "float32")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if plan.quantization == "none":
        model = device.place(model)
    return model


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer, padding with EOS where it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def peft_config(config: TrainConfig) -> Any:
    """peft's LoraConfig for a LoRA/QLoRA run; None for full fine-tuning."""
    if not is_lora(config):
        return None
    from peft import LoraConfig

    rank = int(config.lora_rank or 8)
    return LoraConfig(
        r=rank,
        lora_alpha=int(config.lora_alpha or 2 * rank),
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )


def trl_arguments(
    config: TrainConfig, plan: Plan, device: Device, output_dir: Path, *, has_eval: bool
) -> dict[str, Any]:
    """The arguments SFTConfig and DPOConfig share: batch, accumulation, checkpointing and
    precision from the plan, the schedule from the config, checkpoints under the run dir."""
    torch_device = device.torch_device()
    on_cpu = torch_device is not None and torch_device.type == "cpu"
    eval_on = has_eval and config.eval_steps is not None
    return {
        "output_dir": str(output_dir / rundir.CHECKPOINTS),
        "per_device_train_batch_size": plan.micro_batch,
        "per_device_eval_batch_size": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": None,  # hwkit rotates after the completeness marker
        "eval_strategy": "steps" if eval_on else "no",
        "eval_steps": config.eval_steps if eval_on else None,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": config.report_to,
        "bf16": plan.dtype == "bfloat16" and plan.quantization == "none",
        "fp16": plan.dtype == "float16" and plan.quantization == "none",
        "use_cpu": on_cpu,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "max_length": plan.max_seq_len,
        "ddp_backend": "gloo" if on_cpu and world()[1] > 1 else None,
        "ddp_find_unused_parameters": False,
    }


def guarded_trainer(
    build: Callable[..., Any],
    *,
    guard: MemoryGuard,
    tokens: TokenCounter,
    paired_rows: bool,
    device: Device,
    output_dir: Path,
    keep_checkpoints: int,
    run: str,
    **kwargs: Any,
) -> Any:
    """trl's trainer from ``build(**kwargs)`` (a GuardedMixin subclass) with the memory guard
    and token counter inside, and hwkit's callbacks (metrics.jsonl and progress, complete
    checkpoints, the guard's step boundary) in place of HF's printers."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from hwkit.plugins.trainers.callbacks import CompleteCheckpoints, GuardCallback, MetricsCallback

    trainer = build(**kwargs)
    trainer.hwkit_guard = guard
    trainer.hwkit_tokens = tokens
    trainer.hwkit_paired_rows = paired_rows
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    trainer.add_callback(MetricsCallback(output_dir / rundir.METRICS, device, tokens, run=run))
    trainer.add_callback(CompleteCheckpoints(output_dir / rundir.CHECKPOINTS, keep_checkpoints))
    trainer.add_callback(GuardCallback(guard))
    return trainer
