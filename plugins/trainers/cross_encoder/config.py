"""``hwkit train cross-encoder CONFIG``: which BEIR datasets, how many hard negatives, which
loss, how long (every field defaulted: SciFact train + squad-open train, SciFact test held out).

Relative dataset paths are read from the working directory, as the embedder trainer's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hwkit.trainer import JobConfig

DEFAULT_MODEL = "all-minilm-l6-v2"
SHARED_DATA_ENV = "HWKIT_SHARED_DATA"


def shared_data() -> Path:
    """``$HWKIT_SHARED_DATA`` or ``../shared/data``: where the default datasets live."""
    return Path(os.environ.get(SHARED_DATA_ENV, "../shared/data"))


class BeirSource(BaseModel):
    """One BEIR directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) and its split."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    split: str = "train"
    max_queries: int | None = Field(
        None, ge=1, description="a seeded sample of this many judged queries; None: all"
    )


def _default_train() -> list[BeirSource]:
    root = shared_data()
    return [BeirSource(path=root / "scifact"), BeirSource(path=root / "squad-open")]


def _default_eval() -> BeirSource:
    return BeirSource(path=shared_data() / "scifact", split="test")


class CrossEncoderTrainConfig(JobConfig):
    """A 1-logit cross-encoder (reranker) trained on BM25 hard negatives (``output_dir`` and
    ``device`` are the job flow's, from :class:`hwkit.trainer.JobConfig`)."""

    output_dir: Path = Field(Path("runs/cross-encoder"), description="the run directory")
    model: str | None = Field(
        None,
        description="known name or model directory; a fresh 1-logit head is put on its "
        "encoder. None: all-MiniLM-L6-v2",
    )
    data: list[BeirSource] = Field(default_factory=_default_train, min_length=1)
    eval_data: BeirSource | None = Field(
        default_factory=_default_eval, description="held-out split for nDCG@10; None: none"
    )
    eval_queries: int = Field(100, ge=1, description="held-out queries scored (a seeded sample)")
    eval_depth: int = Field(20, ge=1, description="BM25 candidates reranked per held-out query")
    eval_every: int | None = Field(None, ge=1, description="steps between evaluations")
    negatives: int = Field(4, ge=1, description="BM25 hard negatives per (query, positive)")
    mine_depth: int = Field(30, ge=1, description="BM25 hits searched for the negatives")
    loss: Literal["bce", "listwise"] = Field("bce", description="see cross_encoder/loss.py")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1, description="(query, positive) groups per step")
    micro_batch: int | None = Field(None, ge=1, description="groups at once; None: the plan's")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    max_seq_len: int = Field(256, ge=8, description="query + document tokens")
    seed: int = 42
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)

    @property
    def group_size(self) -> int:
        """Pairs per (query, positive): the positive and its negatives."""
        return 1 + self.negatives
