"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

One implementation for every writer in hwkit (run directories, prepared data, exports,
indexes, checkpoints): a temporary file or folder beside the target, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> Path:
    """Indented JSON; values JSON cannot hold (Decimal, datetime, Path) become strings."""
    return write_text_atomic(
        path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    )


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> Path:
    """One JSON object per line, same string fallback as :func:`write_json_atomic`."""
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    return write_text_atomic(path, lines)


@contextlib.contextmanager
def staged_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` if the block
    succeeds, delete it if the block raises."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    path = Path(tmp)
    try:
        yield path
        os.chmod(path, 0o644)
        os.replace(path, final)
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; swap it in when the block succeeds (the
    old folder, if any, is removed only after the new one is in place)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        old: Path | None = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
