"""The ``cross-encoder`` trainer: a reranker for BM25, trained on BM25 hard negatives and run
by the core's job flow (``hwkit.jobs.train``) phase by phase.

``prepare`` reads the BEIR datasets, mines each (query, relevant document)'s negatives
with BM25 and picks the held-out queries with their BM25 candidates; ``job`` asks for a
``cross-encoder-train`` plan (the batch in pairs, at ``max_seq_len``); ``fit`` puts a fresh
one-logit head on the encoder, trains (:mod:`.loop`), measures nDCG@10 of BM25 -> rerank
on the held-out queries and saves ``model/`` for :class:`RerankRetriever`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit import rundir
from hwkit.atomic import write_json_atomic
from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.plugins.trainers.cross_encoder.config import (
    DEFAULT_MODEL,
    BeirSource,
    CrossEncoderTrainConfig,
)
from hwkit.plugins.trainers.cross_encoder.data import (
    Group,
    judged,
    read_groups,
    require_some,
    write_groups,
)
from hwkit.plugins.trainers.cross_encoder.evaluation import PROBE_GROUPS, bm25_ndcg
from hwkit.plugins.trainers.cross_encoder.mining import Candidates, Indexes, candidates, mine
from hwkit.trainer import JobConfig, Trainer, TrainingData, TrainResult

if TYPE_CHECKING:
    from hwkit.allocator import Job
    from hwkit.device import Device
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.plan import Plan

log = get_logger("hwkit.train.cross_encoder")

FINAL = "model"  # the sequence-classification directory in the run directory
METRICS = "metrics.json"  # nDCG@10 before/after, probe losses, per-step losses, decisions


@dataclass
class HeldOut:
    """The held-out queries' BM25 candidates and BM25's own nDCG@10 on them."""

    candidates: Candidates
    bm25_ndcg: float

    def __len__(self) -> int:
        return len(self.candidates.queries)


def model_dir(config: CrossEncoderTrainConfig) -> Path:
    """The starting model's weights directory (a known name or a directory)."""
    from hwkit.models import resolve

    return resolve(config.model, default=DEFAULT_MODEL).weights_dir


def _absolute(source: BeirSource) -> BeirSource:
    return source.model_copy(update={"path": Path(source.path).expanduser().resolve()})


class CrossEncoderTrainer(Trainer):
    """Trains a (query, document) -> relevance logit reranker from BEIR qrels."""

    name: ClassVar[str] = "cross-encoder"
    config_model: ClassVar[type[JobConfig]] = CrossEncoderTrainConfig

    def __init__(self, config: CrossEncoderTrainConfig | None = None) -> None:
        self.config = config or CrossEncoderTrainConfig()
        self.decisions: list[dict[str, Any]] = []

    # -- the phases ---------------------------------------------------------------------------
    def resolve(self, config: Any, profile: HardwareProfile) -> CrossEncoderTrainConfig:
        """The config as this trainer's model, with absolute run and data paths."""
        cfg = CrossEncoderTrainConfig.model_validate(config.model_dump())
        update: dict[str, Any] = {
            "output_dir": Path(cfg.output_dir).expanduser().absolute(),
            "data": [_absolute(s) for s in cfg.data],
        }
        if cfg.eval_data is not None:
            update["eval_data"] = _absolute(cfg.eval_data)
        return cfg.model_copy(update=update)

    def prepare(
        self, config: CrossEncoderTrainConfig, run_dir: Path, *, resume: bool
    ) -> TrainingData:
        """The training groups (mined, or read back on resume) and the held-out candidates;
        what was used and skipped goes to ``report.json``."""
        self.config = config
        model_dir(config)  # a missing model fails before any data is read
        indexes = Indexes()
        saved = run_dir / rundir.TRAIN_DATA
        report: dict[str, Any] = {"datasets": []}
        if resume and saved.is_file():
            groups = read_groups(saved)
            if (run_dir / rundir.REPORT).is_file():  # what the first run found in the sources
                report = json.loads((run_dir / rundir.REPORT).read_text(encoding="utf-8"))
            report["resumed_from"] = str(saved)
        else:
            groups = []
            sources = [judged(s, seed=config.seed) for s in config.data]
            for found in sources:
                mined = mine(
                    found,
                    indexes.get(found),
                    negatives=config.negatives,
                    depth=config.mine_depth,
                    seed=config.seed,
                )
                groups += mined.groups
                report["datasets"].append(
                    {
                        **found.report(),
                        "groups": len(mined.groups),
                        "random_negatives": mined.random_fill,
                    }
                )
            require_some(groups, sources, "training queries")
            write_groups(saved, groups)
        held_out = None
        if config.eval_data is not None:
            found = judged(config.eval_data, seed=config.seed, limit=config.eval_queries)
            require_some(list(found.positives), [found], "held-out queries")
            cands = candidates(found, indexes.get(found), config.eval_depth)
            held_out = HeldOut(cands, bm25_ndcg(cands))
            report["eval"] = {**found.report(), "depth": config.eval_depth}
        report["groups"] = len(groups)
        write_json_atomic(run_dir / rundir.REPORT, report)
        log.info(
            "cross_encoder.data",
            groups=len(groups),
            held_out=len(held_out) if held_out else 0,
            skipped=sum(d["skipped_no_relevant_document"] for d in report["datasets"]),
        )
        return TrainingData(groups, [held_out] if held_out else None, report)

    def job(self, config: CrossEncoderTrainConfig, data: TrainingData) -> Job:
        """A ``cross-encoder-train`` job: ``batch_size`` groups of pairs at ``max_seq_len``."""
        from hwkit.allocator import Job, ModelSpec

        group = config.group_size
        return Job(
            kind="cross-encoder-train",
            model=ModelSpec.from_pretrained(str(model_dir(config))),
            seq_len=config.max_seq_len,
            effective_batch=config.batch_size * group,
            lora_rank=None,
            quantization="none",
            micro_batch=config.micro_batch * group if config.micro_batch else None,
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
        from hwkit.plugins.trainers.cross_encoder.evaluation import probe_loss, rerank_ndcg
        from hwkit.plugins.trainers.cross_encoder.export import save_cross_encoder
        from hwkit.plugins.trainers.cross_encoder.loop import RerankLoop

        cfg = self.config
        groups: list[Group] = list(train)
        if not groups:
            raise ConfigError("cross-encoder training got no groups", hint="check the data entries")
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model, tokenizer = _fresh_cross_encoder(model_dir(cfg), cfg.seed)
        if plan.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model = device.place(model)
        model.train()

        loop = RerankLoop(
            model,
            tokenizer,
            groups,
            batch=min(cfg.batch_size, len(groups)),
            config=cfg,
            plan=plan,
            device=device,
        )
        self.decisions = loop.decisions
        folder = output_dir / rundir.CHECKPOINTS
        if resume:
            loop.restore(folder)
        held_out: HeldOut | None = next(iter(eval_data), None) if eval_data else None
        probe = groups[: min(len(groups), PROBE_GROUPS)]
        metrics: dict[str, float] = {}

        def ndcg() -> float:
            assert held_out is not None
            return rerank_ndcg(model, tokenizer, held_out.candidates, plan=plan, device=device)

        def probed() -> float:
            return probe_loss(
                model, tokenizer, probe, loss=cfg.loss, chunk=loop.chunk, plan=plan, device=device
            )

        if loop.step == 0:
            metrics["probe_loss_before"] = probed()
        loop.run(folder, ndcg if held_out is not None else None)
        metrics["probe_loss_after"] = probed()
        if held_out is not None:
            metrics["eval_queries"] = float(len(held_out))
            metrics["eval_ndcg@10_bm25"] = round(held_out.bm25_ndcg, 6)
            metrics["eval_ndcg@10"] = round(ndcg(), 6)
        history = loop.losses
        metrics.update(
            {
                "steps": float(loop.step),
                "groups": float(len(groups)),
                "train_loss_first": history[0] if history else math.nan,
                "train_loss_last": history[-1] if history else math.nan,
                "train_seconds": round(loop.seconds, 3),
                "tokens_per_second": (
                    round(loop.tokens / loop.seconds, 1) if loop.seconds > 0 else 0.0
                ),
                "oom_retries": float(loop.oom_retries),
            }
        )
        final = save_cross_encoder(model, tokenizer, output_dir / FINAL, max_len=plan.max_seq_len)
        write_json_atomic(
            output_dir / METRICS,
            {
                "metrics": metrics,
                "losses": history,
                "evaluations": loop.evaluations,
                "decisions": loop.decisions,
            },
        )
        artifacts = {"model": final, "metrics": output_dir / METRICS}
        for name in (rundir.PLAN, rundir.REPORT):
            if (output_dir / name).is_file():
                artifacts[Path(name).stem] = output_dir / name
        log.info("train.done", trainer=self.name, steps=loop.step, run=str(output_dir))
        return TrainResult(
            output_dir=output_dir, steps=loop.step, metrics=metrics, artifacts=artifacts
        )


def _fresh_cross_encoder(source: Path, seed: int) -> tuple[Any, Any]:
    """The encoder at ``source`` with a new, seeded one-logit classification head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)  # the head's initial weights depend on the seed only
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "classifier newly initialised" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=1, local_files_only=True, use_safetensors=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    return model, tokenizer
