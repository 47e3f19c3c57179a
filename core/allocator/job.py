"""What the user asks for: a workload on a model, before any hardware is considered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hwkit.allocator.spec import ModelSpec
from hwkit.errors import UsageError
from hwkit.plan import JobKind

Quantization = Literal["auto", "none", "nf4", "int8", "int4"]

TRAINING_KINDS = frozenset({"sft", "dpo", "grpo", "full", "embedder-train", "cross-encoder-train"})
# Jobs that train every weight of the model (no adapters, no quantised base).
FULL_KINDS = frozenset({"full", "embedder-train", "cross-encoder-train"})
LORA_KINDS = frozenset({"sft", "dpo"})
# GRPO's group sizes the allocator tries, largest first, when the job leaves it open.
GROUP_SIZES = (8, 4, 2)


@dataclass(frozen=True)
class Job:
    """One workload. ``None`` settings (micro-batch, checkpointing) are the allocator's to choose.

    ``effective_batch`` counts examples per optimizer step (DPO: preference pairs, each a
    chosen and a rejected row; embedder training: (anchor, positive) pairs; cross-encoder
    training: (query, document) pairs, a query's positive and hard negatives together).
    For ``generate`` ``seq_len`` is prompt plus new tokens and ``effective_batch`` the
    number of sequences decoded together; for ``embed`` and ``rerank`` the texts (or query,
    passage pairs) encoded at once. ``runtimes`` are the inference runtimes that can run the
    model, in order of preference (empty: ``transformers``); the plan names the one used.

    ``grpo`` generates while it trains: ``effective_batch`` counts completions per optimizer
    step (prompts x ``group_size``), ``seq_len`` is the longest prompt plus
    ``completion_len``, and ``group_size`` None lets the allocator pick from
    :data:`GROUP_SIZES`. With ``lora_rank`` None it trains every weight; ``reference``
    keeps a frozen reference model for the KL term (LoRA needs no copy: the adapter is
    switched off). ``lora_dropout`` counts the inputs LoRA dropout keeps for backward.
    """

    kind: JobKind
    model: ModelSpec
    seq_len: int = 512
    effective_batch: int = 16
    lora_rank: int | None = 8
    quantization: Quantization = "auto"
    gradient_checkpointing: bool | None = None
    micro_batch: int | None = None
    runtimes: tuple[str, ...] = ()
    group_size: int | None = None
    completion_len: int = 0
    reference: bool = False
    lora_dropout: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, str):  # accept a name or path for convenience
            object.__setattr__(self, "model", ModelSpec.from_pretrained(self.model))
        if self.kind not in get_args(JobKind):
            raise UsageError(
                f"job kind {self.kind!r} unknown", hint="use one of " + ", ".join(get_args(JobKind))
            )
        if self.quantization not in get_args(Quantization):
            raise UsageError(
                f"quantization {self.quantization!r} unknown",
                hint="use one of " + ", ".join(get_args(Quantization)),
            )
        if self.effective_batch < 1:
            raise UsageError(
                f"effective batch {self.effective_batch} is invalid", hint="it must be at least 1"
            )
        if self.seq_len < 1:
            raise UsageError(
                f"sequence length {self.seq_len} is invalid", hint="it must be at least 1"
            )
        if self.seq_len > self.model.max_positions:
            raise UsageError(
                f"sequence length {self.seq_len} exceeds {self.model.name}'s limit of "
                f"{self.model.max_positions} (max_position_embeddings)",
                hint=f"use --seq-len {self.model.max_positions} or less",
            )
        if self.micro_batch is not None and (
            self.micro_batch < 1 or self.effective_batch % self.micro_batch
        ):
            raise UsageError(
                f"micro-batch {self.micro_batch} does not divide the effective batch "
                f"{self.effective_batch}",
                hint="pick a divisor, or leave it to the allocator",
            )
        if self.kind == "grpo":
            self._check_grpo()
        if self.kind in LORA_KINDS or (self.kind == "grpo" and self.lora_rank is not None):
            if self.lora_rank is None or self.lora_rank < 1:
                raise UsageError(
                    f"LoRA rank {self.lora_rank} is invalid for {self.kind}",
                    hint="use a rank of at least 1, or job kind 'full' for full fine-tuning",
                )
        else:
            object.__setattr__(self, "lora_rank", None)
        if self.kind not in TRAINING_KINDS:
            object.__setattr__(self, "gradient_checkpointing", False)
        if self.trains and self.quantization == "int4":
            raise UsageError(
                f"{self.kind} cannot train on int4 weights (an inference format)",
                hint="use quantization 'nf4' (QLoRA) to train on 4-bit weights",
            )
        if self.full_weights and self.quantization in ("nf4", "int8"):
            raise UsageError(
                f"{self.kind} trains every weight and cannot use {self.quantization} weights",
                hint="use quantization 'none', or 'sft' (QLoRA) for a 4-bit base",
            )
        if self.model.encoder and self.kind in {"sft", "dpo", "grpo", "full", "generate"}:
            raise UsageError(
                f"{self.model.name} is an encoder ({self.model.model_type}); "
                f"it cannot run {self.kind}",
                hint="use it for 'embed', 'rerank', 'embedder-train' or 'cross-encoder-train'",
            )

    def _check_grpo(self) -> None:
        if self.completion_len < 1 or self.completion_len >= self.seq_len:
            raise UsageError(
                f"grpo completion length {self.completion_len} must be at least 1 and below "
                f"the sequence length {self.seq_len} (prompt plus completion)",
                hint="set max_completion_length, and max_seq_len above it",
            )
        sizes = GROUP_SIZES if self.group_size is None else (self.group_size,)
        if self.group_size is not None and self.group_size < 2:
            raise UsageError(
                f"grpo group size {self.group_size} is invalid: advantages compare "
                "completions of one prompt",
                hint="use num_generations of at least 2",
            )
        if not any(self.effective_batch % g == 0 for g in sizes):
            raise UsageError(
                f"effective batch {self.effective_batch} (completions per step) is not a "
                f"multiple of the group size {' or '.join(map(str, sizes))}",
                hint="make effective_batch prompts x num_generations",
            )

    @property
    def trains(self) -> bool:
        return self.kind in TRAINING_KINDS

    @property
    def full_weights(self) -> bool:
        """Trains every weight: no adapters and no quantised base."""
        return self.kind in FULL_KINDS or (self.kind == "grpo" and self.lora_rank is None)

    def group_sizes(self) -> tuple[int, ...]:
        """GRPO group sizes to try, largest first (the job's own when it names one)."""
        if self.group_size is not None:
            return (self.group_size,)
        return tuple(g for g in GROUP_SIZES if self.effective_batch % g == 0)

    @property
    def rows_per_example(self) -> int:
        """Sequences each example puts through the model: DPO and pair training use two."""
        return 2 if self.kind in {"dpo", "embedder-train"} else 1
