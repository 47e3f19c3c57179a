"""Training progress: structured events, ``metrics.jsonl``, a rich progress bar, ``loss.png``.

Each HF log call becomes one record (step, loss, learning rate, tokens/s, memory, device
telemetry) appended to ``metrics.jsonl`` and logged through structlog. The progress bar
(with ETA) is drawn only on a terminal; elsewhere the log lines are the progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwkit.atomic import write_bytes_atomic, write_jsonl_atomic
from hwkit.extras import install_hint, is_available, require
from hwkit.log import get_logger
from hwkit.rundir import read_jsonl

log = get_logger("hwkit.train")


class TokenCounter:
    """Non-padding tokens seen by this process's training steps (shared with the trainer)."""

    def __init__(self) -> None:
        self.tokens = 0

    def add(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
            self.tokens += int(mask.sum().item())
            return
        ids = inputs.get("input_ids")
        if ids is not None:
            self.tokens += int(ids.numel())  # padding-free / packed rows carry no padding


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop records past ``after_step`` (steps a killed run logged after its last checkpoint)."""
    rows = read_jsonl(path)
    kept = [r for r in rows if int(r.get("step", 0)) <= after_step]
    write_jsonl_atomic(path, kept)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def plot_loss(metrics_path: Path, png_path: Path, *, title: str = "loss") -> Path | None:
    """The loss curve (train and eval) as a PNG, written atomically; None without data."""
    rows = read_jsonl(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train and not evals:
        return None
    import io

    if not is_available("matplotlib"):  # the "plot" extra is optional; metrics.jsonl has the data
        log.warning(
            "loss plot skipped: matplotlib is not installed", hint=install_hint("matplotlib")
        )
        return None
    matplotlib = require("matplotlib", purpose="the loss plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return write_bytes_atomic(png_path, buf.getvalue())
