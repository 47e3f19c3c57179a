"""The embedder trainer's loop: AdamW with linear warm-up, a batch order that depends only on
(seed, epoch), the memory guard, out-of-memory retries and periodic checkpoints.

An out-of-memory error inside a step zeroes the gradients, frees the cache, halves the
chunk and redoes the same step: no step is lost and the contrastive batch is unchanged
(the gradient cache keeps the negatives whatever the chunk). Under memory pressure the
guard halves the chunk at a step boundary. Each decision is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.log import get_logger
from hwkit.plugins.trainers.embedder import checkpoints
from hwkit.plugins.trainers.embedder.loss import positives_by_query
from hwkit.plugins.trainers.embedder.pairs import Pair
from hwkit.plugins.trainers.embedder.step import contrastive_step

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig

log = get_logger("hwkit.train.embedder")


def _no_decay(name: str) -> bool:
    """Biases and normalisation weights get no weight decay (the usual BERT recipe)."""
    return name.endswith(".bias") or "norm" in name.lower()


class ContrastiveLoop:
    """Trains ``encoder`` on ``pairs`` in batches of ``batch`` under ``plan`` on ``device``."""

    def __init__(
        self,
        encoder: Any,
        tokenizer: Any,
        pairs: Sequence[Pair],
        *,
        batch: int,
        config: EmbedderTrainConfig,
        plan: Plan,
        device: Device,
    ) -> None:
        import torch

        self.encoder, self.tokenizer = encoder, tokenizer
        self.pairs, self.batch = list(pairs), batch
        self.config, self.plan, self.device = config, plan, device
        self.params = [p for p in encoder.parameters() if p.requires_grad]
        named = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            [
                {
                    "params": [p for n, p in named if not _no_decay(n)],
                    "weight_decay": config.weight_decay,
                },
                {"params": [p for n, p in named if _no_decay(n)], "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        self.steps_per_epoch = max(1, len(self.pairs) // batch)
        total = self.steps_per_epoch * config.epochs
        self.total = min(total, config.max_steps) if config.max_steps else total
        self.positives_of = positives_by_query(self.pairs)
        self.step = 0
        self.losses: list[float] = []
        self.tokens = 0
        self.seconds = 0.0
        self.decisions: list[dict[str, Any]] = []

    @property
    def oom_retries(self) -> int:
        return sum(1 for d in self.decisions if d["reason"] == "oom")

    def restore(self, folder: Path) -> None:
        """Continue from the newest complete checkpoint in ``folder``, if there is one."""
        restored = checkpoints.restore(folder, self.encoder, self.optimizer)
        if restored is not None:
            self.step, self.losses = restored.step, list(restored.losses)
            log.info("train.resumed", step=self.step, of=self.total, path=str(restored.path))

    def batch_at(self, step: int) -> list[Pair]:
        """The rows of ``step``: a function of (seed, epoch), so a resumed run sees the same."""
        import numpy as np

        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng(self.config.seed + epoch).permutation(len(self.pairs))
        return [self.pairs[i] for i in order[k * self.batch : (k + 1) * self.batch]]

    def run(self, folder: Path) -> None:
        """Train to ``total`` steps, checkpointing into ``folder`` every ``checkpoint_every``."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        from hwkit.allocator import MemoryGuard

        cfg = self.config
        warmup = int(self.total * cfg.warmup_ratio)
        scheduler = get_linear_schedule_with_warmup(
            self.optimizer, warmup, self.total, last_epoch=self.step - 1
        )
        chunk = min(self.plan.micro_batch, self.batch)
        guard = MemoryGuard(self.device, micro_batch=chunk, grad_accum=1)
        started = time.perf_counter()
        torch.manual_seed(cfg.seed + self.step)
        with guard:
            while self.step < self.total:
                rows = self.batch_at(self.step)
                if guard.at_step_boundary():
                    chunk = min(chunk, guard.micro_batch)
                loss, tokens, chunk = self._step_surviving_oom(rows, chunk)
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                scheduler.step()
                self.step += 1
                self.tokens += tokens
                self.losses.append(round(loss, 6))
                log.info(
                    "train.step", step=self.step, of=self.total, loss=round(loss, 4), chunk=chunk
                )
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total:
                    checkpoints.save(
                        folder,
                        self.step,
                        self.encoder,
                        self.optimizer,
                        self.losses,
                        keep=cfg.keep_checkpoints,
                    )
        self.seconds += time.perf_counter() - started

    def _step_surviving_oom(self, rows: list[Pair], chunk: int) -> tuple[float, int, int]:
        """(loss, tokens, chunk used): the step retried in halves after out-of-memory."""
        while True:
            try:
                self.optimizer.zero_grad(set_to_none=True)
                loss, tokens = contrastive_step(
                    self.encoder,
                    self.tokenizer,
                    rows,
                    self.positives_of,
                    chunk=chunk,
                    config=self.config,
                    plan=self.plan,
                    device=self.device,
                )
                return loss, tokens, chunk
            except Exception as exc:
                if not self.device.is_oom(exc) or chunk <= 1:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                self.device.empty_cache()
                self._record_oom(chunk, str(exc))
                chunk = max(1, chunk // 2)

    def _record_oom(self, chunk: int, detail: str) -> None:
        decision = {
            "time": time.time(),
            "reason": "oom",
            "step": self.step,
            "old_micro_batch": chunk,
            "new_micro_batch": max(1, chunk // 2),
            "detail": detail[:200],
        }
        self.decisions.append(decision)
        log.warning("out of memory: retrying the step with a smaller micro-batch", **decision)
