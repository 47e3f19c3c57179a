"""The memory guard inside trl's trainers: every micro-batch runs through the guard.

``GuardedMixin.training_step`` mirrors ``transformers.Trainer.training_step`` but hands
forward+backward to ``MemoryGuard.run_micro_batch``, which cuts the micro-batch into
chunks (each chunk's loss scaled by its share of rows, so the gradient is the unsplit
one) and on an out-of-memory error restores the gradients and retries the same
micro-batch in smaller chunks: no optimizer step is lost and the effective batch holds.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from hwkit.plugins.trainers.metrics import TokenCounter

if TYPE_CHECKING:
    import torch

    from hwkit.allocator import MemoryGuard


class GuardedMixin:
    """Mixed in before a trl trainer class; set ``hwkit_guard`` and ``hwkit_tokens``."""

    hwkit_guard: MemoryGuard | None = None
    hwkit_tokens: TokenCounter | None = None
    # DPO batches are [chosen; rejected]: split by pairs, never one half without the other.
    hwkit_paired_rows: bool = False
    # A loss already scaled for accumulation that averages over the rows it is given: when
    # the guard splits a micro-batch, each chunk's loss is weighted by its share of rows.
    hwkit_scale_chunks: bool = False

    def training_step(
        self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        trainer: Any = self
        guard = self.hwkit_guard
        if guard is None:
            if self.hwkit_tokens is not None:
                self.hwkit_tokens.add(inputs)
            return super().training_step(model, inputs, num_items_in_batch)  # type: ignore[misc]
        model.train()
        if hasattr(trainer.optimizer, "train") and callable(trainer.optimizer.train):
            trainer.optimizer.train()
        inputs = trainer._prepare_inputs(inputs)
        if self.hwkit_tokens is not None:
            self.hwkit_tokens.add(inputs)
        if trainer.loss_is_scaled_for_ga is not None:
            scaled_for_ga = bool(trainer.loss_is_scaled_for_ga)
        else:
            scaled_for_ga = (
                trainer.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or trainer.compute_loss_func is not None
        offload = getattr(trainer, "maybe_activation_offload_context", None)

        flat = _is_padding_free(inputs)

        def step(chunk: dict[str, Any], scale: float) -> torch.Tensor:
            if self.hwkit_paired_rows:
                chunk = _unpair(chunk)
            elif flat:
                chunk = _flatten_sequences(chunk)
            with offload if offload is not None else contextlib.nullcontext():
                with trainer.compute_loss_context_manager():
                    loss = trainer.compute_loss(model, chunk, num_items_in_batch=num_items_in_batch)
                if trainer.args.n_gpu > 1:
                    loss = loss.mean()
                if not scaled_for_ga:
                    # a mean over the chunk: weight it by the chunk's share of the micro-batch
                    loss = loss / trainer.current_gradient_accumulation_steps * scale
                elif self.hwkit_scale_chunks:
                    loss = loss * scale
                trainer.accelerator.backward(loss)
            return loss.detach()

        if self.hwkit_paired_rows:
            batch = _pair(inputs)
        elif flat:
            batch = _sequence_rows(inputs)
        else:
            batch = inputs
        return guard.run_micro_batch(batch, step, model.parameters())


def _pair(inputs: dict[str, Any]) -> dict[str, Any]:
    """[chosen(B); rejected(B)] rows -> (B, 2, ...) so splitting keeps pairs together."""
    import torch

    rows = next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim())
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if (
            isinstance(value, torch.Tensor)
            and value.dim()
            and value.shape[0] == rows
            and rows % 2 == 0
        ):
            out[key] = value.view(2, rows // 2, *value.shape[1:]).transpose(0, 1)
        else:
            out[key] = value
    return out


def _unpair(chunk: dict[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, value in chunk.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == 2:
            out[key] = value.transpose(0, 1).reshape(-1, *value.shape[2:])
        else:
            out[key] = value
    return out


# -- padding-free batches --------------------------------------------------------------------
# trl's padding-free collator (used by BFD packing) concatenates the micro-batch into one row
# with position ids restarting at each sequence. To let the guard split it, the sequences
# become the rows of a padded matrix, and each chunk is flattened back the way trl builds it.

_SEQ_LEN = "hwkit_seq_len"
_DERIVED = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


def _is_padding_free(inputs: dict[str, Any]) -> bool:
    ids = inputs.get("input_ids")
    return (
        "position_ids" in inputs
        and "attention_mask" not in inputs
        and ids is not None
        and ids.dim() == 2
        and ids.shape[0] == 1
    )


def _sequence_rows(inputs: dict[str, Any]) -> dict[str, Any]:
    """One flat row of packed sequences -> (sequences, longest) rows plus their lengths."""
    import torch

    positions = inputs["position_ids"][0]
    n = positions.shape[0]
    starts = (positions == 0).nonzero().flatten().tolist() or [0]
    bounds = [*starts, n]
    lengths = [b - a for a, b in itertools.pairwise(bounds)]
    longest = max(lengths)
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in _DERIVED:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, n):
            fill = -100 if key == "labels" else 0
            rows = value.new_full((len(lengths), longest), fill)
            for i, (a, b) in enumerate(itertools.pairwise(bounds)):
                rows[i, : b - a] = value[0, a:b]
            out[key] = rows
        else:
            out[key] = value
    out[_SEQ_LEN] = torch.tensor(lengths, device=positions.device)
    return out


def _flatten_sequences(chunk: dict[str, Any]) -> dict[str, Any]:
    """Rows of sequences back to trl's padding-free layout (one row, varlen boundaries)."""
    import torch

    lengths = chunk[_SEQ_LEN].tolist()
    out: dict[str, Any] = {}
    for key, value in chunk.items():
        if key == _SEQ_LEN:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[0] == len(lengths):
            out[key] = torch.cat([value[i, :n] for i, n in enumerate(lengths)])[None]
        else:
            out[key] = value
    device = out["input_ids"].device
    lens = torch.tensor(lengths, dtype=torch.int32, device=device)
    cu = torch.cat(
        [torch.zeros(1, dtype=torch.int32, device=device), lens.cumsum(0, dtype=torch.int32)]
    )
    out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu
    out["max_length_q"] = out["max_length_k"] = int(lens.max())
    out["seq_idx"] = torch.repeat_interleave(
        torch.arange(len(lengths), dtype=torch.int32, device=device), lens
    )[None]
    return out
