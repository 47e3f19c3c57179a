"""The cross-encoder trainer's loop: AdamW with linear warm-up, a batch order that depends
only on (seed, epoch), the memory guard, out-of-memory retries, periodic evaluation and
checkpoints.

The plan's micro-batch counts (query, document) pairs; the loop runs whole groups, as many
as fit in it (at least one). An out-of-memory error inside a step zeroes the gradients,
frees the cache, halves the chunk and redoes the same step; under memory pressure the guard
halves it at a step boundary. No step is lost and the batch is unchanged. Each decision is
recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.log import get_logger
from hwkit.plugins.trainers.cross_encoder import checkpoints
from hwkit.plugins.trainers.cross_encoder.data import Group
from hwkit.plugins.trainers.cross_encoder.step import train_step

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.cross_encoder.config import CrossEncoderTrainConfig

log = get_logger("hwkit.train.cross_encoder")

Evaluate = Callable[[], float]


def _no_decay(name: str) -> bool:
    """Biases and normalisation weights get no weight decay (the usual BERT recipe)."""
    return name.endswith(".bias") or "norm" in name.lower()


class RerankLoop:
    """Trains ``model`` on ``groups``, ``batch`` groups per step, under ``plan`` on ``device``."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        groups: Sequence[Group],
        *,
        batch: int,
        config: CrossEncoderTrainConfig,
        plan: Plan,
        device: Device,
    ) -> None:
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.groups, self.batch = list(groups), batch
        self.config, self.plan, self.device = config, plan, device
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
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
        self.steps_per_epoch = max(1, len(self.groups) // batch)
        total = self.steps_per_epoch * config.epochs
        self.total = min(total, config.max_steps) if config.max_steps else total
        self.chunk = max(1, plan.micro_batch // config.group_size)
        self.step = 0
        self.losses: list[float] = []
        self.evaluations: list[dict[str, float]] = []
        self.tokens = 0
        self.seconds = 0.0
        self.decisions: list[dict[str, Any]] = []

    @property
    def oom_retries(self) -> int:
        return sum(1 for d in self.decisions if d["reason"] == "oom")

    def restore(self, folder: Path) -> None:
        """Continue from the newest complete checkpoint in ``folder``, if there is one."""
        restored = checkpoints.restore(folder, self.model, self.optimizer)
        if restored is not None:
            self.step, self.losses = restored.step, list(restored.losses)
            self.evaluations = list(restored.evaluations)
            log.info("train.resumed", step=self.step, of=self.total, path=str(restored.path))

    def batch_at(self, step: int) -> list[Group]:
        """The groups of ``step``: a function of (seed, epoch), so a resumed run sees the same."""
        import numpy as np

        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng(self.config.seed + epoch).permutation(len(self.groups))
        return [self.groups[i] for i in order[k * self.batch : (k + 1) * self.batch]]

    def run(self, folder: Path, evaluate: Evaluate | None = None) -> None:
        """Train to ``total`` steps; evaluate every ``eval_every`` and checkpoint every
        ``checkpoint_every`` (and at the end) into ``folder``."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        from hwkit.allocator import MemoryGuard

        cfg = self.config
        warmup = int(self.total * cfg.warmup_ratio)
        scheduler = get_linear_schedule_with_warmup(
            self.optimizer, warmup, self.total, last_epoch=self.step - 1
        )
        chunk = min(self.chunk, self.batch)
        guard = MemoryGuard(self.device, micro_batch=chunk, grad_accum=1)
        started, evaluating = time.perf_counter(), 0.0
        torch.manual_seed(cfg.seed + self.step)
        with guard:
            while self.step < self.total:
                groups = self.batch_at(self.step)
                if guard.at_step_boundary():
                    chunk = min(chunk, guard.micro_batch)
                loss, tokens, chunk = self._step_surviving_oom(groups, chunk)
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.optimizer.step()
                scheduler.step()
                self.step += 1
                self.tokens += tokens
                self.losses.append(round(loss, 6))
                log.info(
                    "train.step", step=self.step, of=self.total, loss=round(loss, 4), chunk=chunk
                )
                if evaluate is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    t0 = time.perf_counter()
                    self.evaluations.append({"step": float(self.step), "ndcg@10": evaluate()})
                    evaluating += time.perf_counter() - t0
                    log.info("train.eval", **self.evaluations[-1])
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total:
                    checkpoints.save(
                        folder,
                        self.step,
                        self.model,
                        self.optimizer,
                        self.losses,
                        self.evaluations,
                        keep=cfg.keep_checkpoints,
                    )
        self.seconds += time.perf_counter() - started - evaluating  # training only

    def _step_surviving_oom(self, groups: list[Group], chunk: int) -> tuple[float, int, int]:
        """(loss, tokens, chunk used): the step retried in halves after out-of-memory."""
        while True:
            try:
                self.optimizer.zero_grad(set_to_none=True)
                loss, tokens = train_step(
                    self.model,
                    self.tokenizer,
                    groups,
                    chunk=chunk,
                    loss=self.config.loss,
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
        log.warning("out of memory: retrying the step with fewer groups at once", **decision)
