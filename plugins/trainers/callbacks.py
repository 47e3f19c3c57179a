"""HF Trainer callbacks hwkit adds: metrics and progress, complete checkpoints, the guard.

Kept apart from the light helpers because importing transformers' callback module pulls
in torch; only ``fit`` imports this module.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from hwkit.checkpoints import mark_complete, rotate
from hwkit.log import get_logger
from hwkit.plugins.trainers.metrics import TokenCounter, _plain

if TYPE_CHECKING:
    from hwkit.allocator import MemoryGuard
    from hwkit.device import Device

log = get_logger("hwkit.train")


class MetricsCallback(TrainerCallback):
    """metrics.jsonl + structlog events + the terminal progress bar (main process only)."""

    def __init__(self, path: Path, device: Device, counter: TokenCounter, *, run: str) -> None:
        self.path = path
        self.device = device
        self.counter = counter
        self.run = run
        self._t = time.perf_counter()
        self._tokens = 0
        self._progress: Any = None
        self._task: Any = None

    # -- progress bar ----------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t = time.perf_counter()
        self._tokens = self.counter.tokens
        if state.is_world_process_zero and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn(f"[bold]{self.run}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=state.max_steps, completed=state.global_step, loss="-"
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- records -----------------------------------------------------------------------------
    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now = time.perf_counter()
        elapsed = max(now - self._t, 1e-9)
        tokens = self.counter.tokens - self._tokens
        self._t, self._tokens = now, self.counter.tokens
        record: dict[str, Any] = {"step": state.global_step, "time": time.time()}
        record.update({k: _plain(v) for k, v in logs.items()})
        is_train = "loss" in logs
        if is_train:
            record["tokens"] = tokens
            record["tokens_per_s"] = round(tokens / elapsed, 2)
        try:
            mem = self.device.memory()
            record["memory_used"] = mem.used
            record["memory_total"] = mem.total
            tel = self.device.telemetry()
            record.update(
                {
                    f"device_{k}": v
                    for k, v in {
                        "utilization_pct": tel.utilization_pct,
                        "temperature_c": tel.temperature_c,
                        "power_w": tel.power_w,
                    }.items()
                    if v is not None
                }
            )
        except Exception as exc:  # a failing sensor must not stop training
            record["telemetry_error"] = str(exc)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        log.info("train.log" if is_train else "train.eval", run=self.run, **record)
        if self._progress is not None and "loss" in logs:
            self._progress.update(self._task, loss=f"{logs['loss']:.4f}")


class CompleteCheckpoints(TrainerCallback):
    """After HF saves ``checkpoint-N``: barrier, marker, rotation (main process only)."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _barrier()
        if state.is_world_process_zero:
            path = self.folder / f"checkpoint-{state.global_step}"
            if path.is_dir():
                mark_complete(path, step=state.global_step)
                rotate(self.folder, self.keep)
                log.info("checkpoint.saved", step=state.global_step, path=str(path))
        _barrier()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class GuardCallback(TrainerCallback):
    """Calls ``guard.at_step_boundary()`` before each optimizer step."""

    def __init__(self, guard: MemoryGuard) -> None:
        self.guard = guard

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.guard.start()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.guard.at_step_boundary()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.guard.stop()
