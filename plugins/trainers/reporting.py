"""The reporting side of the SFT and DPO trainers: validation numbers before and after,
the weights saved into the run directory, ``loss.png``, ``report.json`` and the result.

``baseline.json`` keeps the before-training numbers so a resumed run reports the same
baseline as the run it continues (the model has trained by then).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit import atomic, rundir
from hwkit.log import get_logger
from hwkit.trainer import TrainResult

if TYPE_CHECKING:
    from hwkit.allocator import MemoryGuard
    from hwkit.plan import Plan

log = get_logger("hwkit.train")

BASELINE = "baseline.json"  # validation metrics before training (kept across resume)
NEVER_SHIPPED = ("README.md", "training_args.bin")  # a model card stub; a pickle


def plain(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """Metrics with tensors turned into Python numbers (JSON-writable)."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in (metrics or {}).items()}


def evaluation(trainer: Any) -> dict[str, Any]:
    """Validation numbers (``eval_loss``, DPO's reward accuracy…) of the model as it is now."""
    return plain(trainer.evaluate(metric_key_prefix="eval"))


def baseline(
    measure: Callable[[], dict[str, Any]], output_dir: Path, *, resumed: bool, write: bool
) -> dict[str, Any]:
    """The held-out numbers before training: ``measure()`` now, or read back on resume."""
    path = output_dir / BASELINE
    if resumed and path.is_file():
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded
    numbers = measure()
    if write:
        atomic.write_json_atomic(path, numbers)
    return numbers


def save_weights(trainer: Any, tokenizer: Any, output_dir: Path, *, merge: bool) -> dict[str, Path]:
    """Adapter (or full) weights and tokenizer into the run directory (and ``merged/`` when
    asked), file by file through a temp folder so a killed save never leaves a torn file."""
    staging = Path(tempfile.mkdtemp(prefix=".final-", dir=output_dir))
    try:
        trainer.save_model(str(staging))
        tokenizer.save_pretrained(str(staging))
        if merge:
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(str(staging / "merged"))
            tokenizer.save_pretrained(str(staging / "merged"))
        saved: dict[str, Path] = {}
        for item in staging.iterdir():
            if item.name in NEVER_SHIPPED:
                continue
            dest = output_dir / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
            saved[item.name] = dest
        return saved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_artifacts(
    trainer: Any, tokenizer: Any, output_dir: Path, *, merge: bool, title: str
) -> dict[str, Path]:
    """The weights, the loss plot, and the run files already written, by name."""
    from hwkit.plugins.trainers.metrics import plot_loss

    artifacts = save_weights(trainer, tokenizer, output_dir, merge=merge)
    png = plot_loss(output_dir / rundir.METRICS, output_dir / rundir.LOSS_PNG, title=title)
    if png is not None:
        artifacts["loss_png"] = png
    return artifacts


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What report.json repeats of the plan (plan.json has all of it)."""
    return {
        "device": plan.device,
        "dtype": plan.dtype,
        "micro_batch": plan.micro_batch,
        "grad_accum": plan.grad_accum,
        "profile": plan.profile,
    }


def guard_summary(guard: MemoryGuard) -> dict[str, Any]:
    """The memory guard's decisions and where it left the micro-batch and accumulation."""
    return {
        "guard_decisions": [d.to_dict() for d in guard.decisions],
        "final_micro_batch": guard.micro_batch,
        "final_grad_accum": guard.grad_accum,
    }


def write_report(output_dir: Path, report: dict[str, Any]) -> dict[str, Path]:
    """``report.json`` (what ``hwkit eval`` reads back), and the run files present."""
    artifacts = {"report": atomic.write_json_atomic(output_dir / rundir.REPORT, report)}
    for name in (rundir.PLAN, rundir.CONFIG, rundir.METRICS, rundir.REJECTS):
        if (output_dir / name).is_file():
            artifacts[name] = output_dir / name
    return artifacts


def result(
    output_dir: Path,
    steps: int,
    *,
    train_metrics: dict[str, Any],
    final_eval: dict[str, Any],
    artifacts: dict[str, Path],
) -> TrainResult:
    """The TrainResult: numeric training and final validation metrics, the artefacts."""
    metrics = {
        k: float(v)
        for k, v in {**train_metrics, **final_eval}.items()
        if isinstance(v, int | float)
    }
    return TrainResult(output_dir=output_dir, steps=steps, metrics=metrics, artifacts=artifacts)
