"""The Plan: what the allocator decided for a job, with the memory estimate and reasons.

Trainers, embedders and servers take a Plan instead of loose settings, so every run
records why it used the dtype, batch and device it did.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

JobKind = Literal[
    "sft",
    "dpo",
    "grpo",
    "full",
    "embed",
    "generate",
    "rerank",
    "embedder-train",
    "cross-encoder-train",
]


class MemoryEstimate(BaseModel):
    """Estimated peak bytes, by part. ``total`` is the sum the allocator budgets."""

    weights: int = 0
    adapters: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    logits: int = 0
    kv_cache: int = 0
    overhead: int = 0

    @property
    def total(self) -> int:
        return (
            self.weights
            + self.adapters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.kv_cache
            + self.overhead
        )

    def parts(self) -> dict[str, int]:
        return self.model_dump()


class Plan(BaseModel):
    """A runnable decision for one job on one device."""

    job: JobKind
    model: str
    device: str = Field(description="device id, e.g. cuda:0, cpu:0")
    device_name: str = ""
    profile: str = Field(description="hardware profile name the plan was made against")
    present: bool = Field(True, description="False when planning for hardware not in this machine")
    dtype: str = "float32"
    quantization: str = Field(
        "none",
        description="weights: none, nf4/int8 (bitsandbytes), int8/int4 (OpenVINO), or the "
        "format a GGUF/IR file stores (e.g. q4_k_m)",
    )
    attention: str = "sdpa"
    runtime: str | None = Field(None, description="inference runtime; None for training")
    micro_batch: int = 1
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    max_seq_len: int = 512
    lora_rank: int | None = None
    group_size: int | None = Field(None, description="grpo: completions sampled per prompt")
    generation_batch: int | None = Field(
        None, description="grpo: completions generated together (a multiple of micro_batch)"
    )
    completion_len: int | None = Field(None, description="grpo: longest completion, tokens")
    estimate: MemoryEstimate = Field(default_factory=MemoryEstimate)
    budget: int = 0
    reasons: dict[str, str] = Field(default_factory=dict)

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    @property
    def headroom(self) -> int:
        return self.budget - self.estimate.total

    def with_micro_batch(self, micro_batch: int, reason: str) -> Plan:
        """This plan at a smaller micro-batch; accumulation rises to keep the effective batch."""
        if micro_batch < 1 or self.effective_batch % micro_batch:
            raise ValueError(f"micro_batch {micro_batch} does not divide {self.effective_batch}")
        reasons = dict(self.reasons, micro_batch=reason)
        return self.model_copy(
            update={
                "micro_batch": micro_batch,
                "grad_accum": self.effective_batch // micro_batch,
                "reasons": reasons,
            }
        )
