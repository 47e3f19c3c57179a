"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

One implementation for every writer in hwkit (run directories, prepared data, exports,
indexes): a temporary file in the same folder, fsync, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
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
