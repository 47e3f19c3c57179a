"""``hwkit train embedder CONFIG``: what to adapt, on which pairs, how (every field defaulted)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hwkit.trainer import JobConfig

DEFAULT_MODEL = "all-minilm-l6-v2"


class EmbedderTrainConfig(JobConfig):
    """Contrastive fine-tuning of a sentence embedder (``output_dir`` and ``device`` are the
    job flow's, from :class:`hwkit.trainer.JobConfig`)."""

    output_dir: Path = Field(Path("runs/embedder"), description="the run directory")
    model: str | None = Field(
        None, description="known name, model directory or embedder run; None: all-MiniLM-L6-v2"
    )
    data: Path | None = Field(None, description="JSONL of {query, positive} or a BEIR directory")
    split: str = Field("train", description="qrels split when data is a BEIR directory")
    eval_data: Path | None = Field(None, description="pairs to report the contrastive loss on")
    eval_split: str = "test"
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=2, description="pairs per step = in-batch negatives + 1")
    micro_batch: int | None = Field(None, ge=1, description="None: the allocator's choice")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature (1/scale)")
    max_seq_len: int = Field(256, ge=8, description="document tokens")
    query_max_len: int = Field(64, ge=4, description="query tokens")
    symmetric: bool = Field(False, description="also score each document against all queries")
    seed: int = 42
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_pairs: int | None = Field(None, ge=2)
    query_prefix: str | None = None
    document_prefix: str | None = None
