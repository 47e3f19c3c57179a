"""Checkpoints that are never picked up half-written, and their rotation: one scheme for
every trainer.

HF Trainer writes ``checkpoint-N`` in place. Once every file is on disk (and, in a
multi-process run, after every rank has saved) a ``hwkit-complete.json`` marker is written
atomically; resume only considers marked checkpoints and removes unmarked leftovers of a
killed save. Rotation happens here too, after the marker, so the last complete checkpoint
is never deleted in favour of one that is not.

HF's optimizer, scheduler and RNG state files are torch pickles; transformers loads them
with ``torch.load(weights_only=True)``, and hwkit only resumes from the run's own directory.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwkit.atomic import staged_dir, write_json_atomic
from hwkit.log import get_logger

log = get_logger(__name__)

MARKER = "hwkit-complete.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def checkpoints(folder: Path, *, complete_only: bool = True) -> list[Path]:
    """Checkpoint folders in step order (only those with the marker by default)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and step_of(p) is not None]
    if complete_only:
        found = [p for p in found if (p / MARKER).is_file()]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest_complete(folder: Path) -> Path | None:
    done = checkpoints(folder)
    return done[-1] if done else None


def remove_incomplete(folder: Path) -> list[Path]:
    """Delete checkpoint folders a killed save left without a marker."""
    removed = []
    for path in checkpoints(folder, complete_only=False):
        if not (path / MARKER).is_file():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.warning("checkpoint.incomplete_removed", path=str(path))
    return removed


def mark_complete(path: Path, *, step: int, extra: dict[str, Any] | None = None) -> None:
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    write_json_atomic(
        path / MARKER, {"step": step, "time": time.time(), "files": files, **(extra or {})}
    )


def rotate(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints."""
    done = checkpoints(folder)
    for old in done[: max(0, len(done) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    folder: Path,
    step: int,
    write: Callable[[Path], None],
    *,
    keep: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint written by ``write(tmp_dir)`` in a temporary folder, marked complete and
    renamed to ``checkpoint-STEP``; then older ones are rotated. For trainers that own their
    loop (HF Trainer writes in place and is marked by a callback instead)."""
    final = folder / f"checkpoint-{step}"
    with staged_dir(final) as tmp:
        write(tmp)
        mark_complete(tmp, step=step, extra=extra)
    rotate(folder, keep)
    return final
