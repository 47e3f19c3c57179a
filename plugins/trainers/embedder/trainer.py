"""The ``embedder`` trainer: in-batch negatives (InfoNCE) over (query, positive) pairs, run
by the core's job flow (``hwkit.jobs.train``) phase by phase.

The Plan gives the contrastive batch (``effective_batch``: every query is scored against
every positive in it), the micro-batch (how many rows go through the encoder at once),
dtype and checkpointing. The loop (:mod:`.loop`) keeps the full batch's negatives at any
micro-batch through gradient caching (:mod:`.step`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit import rundir
from hwkit.atomic import write_json_atomic
from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.plugins.trainers.embedder.config import DEFAULT_MODEL, EmbedderTrainConfig
from hwkit.plugins.trainers.embedder.pairs import Pair, load_pairs
from hwkit.trainer import JobConfig, Trainer, TrainingData, TrainResult

if TYPE_CHECKING:
    from hwkit.allocator import Job
    from hwkit.device import Device
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.plan import Plan

log = get_logger("hwkit.train.embedder")

FINAL = "model"  # the sentence-transformers directory in the run directory
METRICS = "metrics.json"  # eval loss before/after, per-step losses, decisions
EVAL_REJECTS = "eval_rejects.jsonl"


def model_dir(config: EmbedderTrainConfig) -> Path:
    """The model's weights directory (a known name, a directory, an embedder run's model/)."""
    from hwkit.models import resolve

    return resolve(config.model, default=DEFAULT_MODEL).weights_dir


class EmbedderTrainer(Trainer):
    """Adapts a sentence embedder to a domain from (query, relevant document) pairs."""

    name: ClassVar[str] = "embedder"
    config_model: ClassVar[type[JobConfig]] = EmbedderTrainConfig

    def __init__(self, config: EmbedderTrainConfig | None = None) -> None:
        self.config = config or EmbedderTrainConfig()
        self.decisions: list[dict[str, Any]] = []

    # -- the phases ---------------------------------------------------------------------------
    def resolve(self, config: Any, profile: HardwareProfile) -> EmbedderTrainConfig:
        """The config as this trainer's model, with an absolute run directory."""
        cfg = EmbedderTrainConfig.model_validate(config.model_dump())
        return cfg.model_copy(update={"output_dir": Path(cfg.output_dir).expanduser().absolute()})

    def prepare(self, config: EmbedderTrainConfig, run_dir: Path, *, resume: bool) -> TrainingData:
        """The training pairs (and evaluation pairs); bad rows go to the run's rejects files."""
        self.config = config
        model_dir(config)  # a missing model fails before any data is read
        if config.data is None:
            raise ConfigError(
                "embedder training needs `data`", hint="a JSONL of pairs or a BEIR dir"
            )
        train = load_pairs(
            config.data,
            split=config.split,
            rejects_path=run_dir / rundir.REJECTS,
            limit=config.max_pairs,
        )
        held_out = None
        if config.eval_data is not None:
            held_out = load_pairs(
                config.eval_data, split=config.eval_split, rejects_path=run_dir / EVAL_REJECTS
            )
        report = {"pairs": len(train), "eval_pairs": len(held_out) if held_out else 0}
        return TrainingData(train, held_out, report)

    def job(self, config: EmbedderTrainConfig, data: TrainingData) -> Job:
        """An ``embedder-train`` job: the contrastive batch at the document length."""
        from hwkit.allocator import Job, ModelSpec

        return Job(
            kind="embedder-train",
            model=ModelSpec.from_pretrained(str(model_dir(config))),
            seq_len=config.max_seq_len,
            effective_batch=config.batch_size,
            lora_rank=None,
            quantization="none",
            micro_batch=config.micro_batch,
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
        """Train under ``plan`` on ``device``; ``model/``, ``metrics.json`` and checkpoints
        in ``output_dir``."""
        from transformers import AutoTokenizer

        from hwkit.plugins.embedders.model_config import read_model_config
        from hwkit.plugins.embedders.pooling import load_encoder
        from hwkit.plugins.trainers.embedder.evaluation import contrastive_loss
        from hwkit.plugins.trainers.embedder.export import save_sentence_transformer
        from hwkit.plugins.trainers.embedder.loop import ContrastiveLoop

        cfg = self.config
        pairs: list[Pair] = list(train)
        batch = min(plan.effective_batch, len(pairs))
        if batch < 2:
            raise ConfigError(
                f"embedder training needs at least 2 pairs per batch, got {len(pairs)} pair(s)",
                hint="in-batch negatives need other pairs in the batch",
            )
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        source = model_dir(cfg)
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        encoder = load_encoder(source, read_model_config(source).pooling)
        encoder.model.train()
        if plan.gradient_checkpointing:
            encoder.model.gradient_checkpointing_enable()
        encoder = device.place(encoder)

        loop = ContrastiveLoop(
            encoder, tokenizer, pairs, batch=batch, config=cfg, plan=plan, device=device
        )
        self.decisions = loop.decisions
        folder = output_dir / rundir.CHECKPOINTS
        if resume:
            loop.restore(folder)
        held_out = list(eval_data) if eval_data is not None else None
        metrics: dict[str, float] = {}

        def held_out_loss() -> float:
            assert held_out
            return contrastive_loss(
                encoder, tokenizer, held_out, config=cfg, plan=plan, device=device
            )

        if held_out and loop.step == 0:
            metrics["eval_loss_before"] = held_out_loss()
        loop.run(folder)
        if held_out:
            metrics["eval_loss_after"] = held_out_loss()
        history = loop.losses
        metrics.update(
            {
                "steps": float(loop.step),
                "train_loss_first": history[0] if history else math.nan,
                "train_loss_last": history[-1] if history else math.nan,
                "train_seconds": round(loop.seconds, 3),
                "tokens_per_second": (
                    round(loop.tokens / loop.seconds, 1) if loop.seconds > 0 else 0.0
                ),
                "oom_retries": float(loop.oom_retries),
            }
        )
        final = save_sentence_transformer(encoder, tokenizer, source, output_dir / FINAL, cfg)
        write_json_atomic(
            output_dir / METRICS,
            {"metrics": metrics, "losses": history, "decisions": loop.decisions},
        )
        artifacts = {"model": final, "metrics": output_dir / METRICS}
        if (output_dir / rundir.PLAN).is_file():
            artifacts["plan"] = output_dir / rundir.PLAN
        log.info("train.done", trainer=self.name, steps=loop.step, run=str(output_dir))
        return TrainResult(
            output_dir=output_dir, steps=loop.step, metrics=metrics, artifacts=artifacts
        )
