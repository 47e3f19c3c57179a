"""Trainer configs: one pydantic model per trainer, read from TOML, every field defaulted.

``None`` means "the active hardware profile decides" (LoRA rank, sequence length); the
resolved values are written to the run directory's ``config.toml`` so a run records what
it actually used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwkit.errors import ConfigError
from hwkit.plugins.data import DataConfig
from hwkit.tomlfile import read_toml
from hwkit.trainer import JobConfig

DEFAULT_MODEL = "smollm2-135m-instruct"

C = TypeVar("C", bound=BaseModel)


class EvalSettings(BaseModel):
    """What ``hwkit eval`` measures besides validation loss."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(default_factory=list, description="fixed prompts for samples")
    samples: int = Field(3, ge=0, description="validation prompts to generate for")
    max_new_tokens: int = Field(64, ge=1)
    max_rows: int = Field(64, ge=1, description="validation rows used for the loss")
    json_score_field: str | None = Field(
        None, description="structured task: the JSON key holding the score to correlate"
    )


class TrainConfig(JobConfig):
    """Fields shared by the SFT and DPO trainers (``output_dir`` and ``device`` are the job
    flow's, from :class:`hwkit.trainer.JobConfig`)."""

    model: str = Field(DEFAULT_MODEL, description="known name, hub id with a local copy, or path")
    data: DataConfig | None = None
    method: Literal["lora", "qlora", "full"] = "lora"
    lora_rank: int | None = Field(None, ge=1, description="None: the profile's default")
    lora_alpha: int | None = Field(None, ge=1, description="None: twice the rank")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    max_seq_len: int | None = Field(None, ge=16, description="None: the profile's, capped at 1024")
    effective_batch: int = Field(8, ge=1)
    micro_batch: int | None = Field(None, ge=1, description="None: the allocator chooses")
    gradient_checkpointing: bool | None = None
    quantization: Literal["auto", "none", "nf4", "int8"] = "auto"
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: str = "linear"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="-1: run the epochs")
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="None: evaluate only before and after")
    seed: int = 42
    report_to: list[str] = Field(default_factory=lambda: ["none"])
    merge: bool = Field(False, description="also save the merged model (LoRA only)")
    eval: EvalSettings = Field(default_factory=EvalSettings)


class SFTConfig(TrainConfig):
    """Supervised fine-tuning on chat messages."""

    output_dir: Path = Path("runs/sft")
    packing: bool = Field(True, description="pack short examples into full rows (BFD)")
    completion_only_loss: bool = Field(
        False,
        description="loss on the last assistant reply only, not on the prompt before it: for "
        "short answers after long prompts (readers, scorers)",
    )


class DPOConfig(TrainConfig):
    """Direct preference optimisation; the reference is the adapter-disabled model."""

    output_dir: Path = Path("runs/dpo")
    method: Literal["lora", "qlora", "full"] = "lora"
    learning_rate: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    max_seq_len: int | None = Field(None, ge=16)


def validate_config(model: type[C], data: dict[str, Any], *, where: str) -> C:
    """Validate, turning pydantic's error list into one line naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{where}: field {field!r}: {err['msg']}{shown}{more}",
            hint="see docs/training.md for the trainer config fields",
        ) from None


def load_config(model: type[C], path: Path, *, overrides: dict[str, Any] | None = None) -> C:
    """Read a trainer TOML file; relative data paths resolve against the file's folder."""
    doc = read_toml(path)
    base = path.resolve().parent
    data = doc.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), str):
        data = dict(data)
        source = data["source"]
        bare = source[3:] if source.startswith("hf:") else source
        if "://" not in source and not Path(bare).is_absolute():
            resolved = str((base / bare).resolve())
            data["source"] = ("hf:" + resolved) if source.startswith("hf:") else resolved
        doc["data"] = data
    name = doc.get("model")
    if isinstance(name, str) and name.startswith(".") and (base / name).exists():
        doc["model"] = str((base / name).resolve())
    doc.update(overrides or {})
    return validate_config(model, doc, where=str(path))
