"""The run directory's files, each written atomically (temp file in the folder, then rename).

A run directory holds: the weights (adapter or merged) and tokenizer, ``plan.json``,
``config.toml``, ``metrics.jsonl``, ``loss.png``, ``rejects.jsonl``, ``report.json``,
the prepared ``train.jsonl``/``validation.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PLAN = "plan.json"
CONFIG = "config.toml"
METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
REJECTS = "rejects.jsonl"
REPORT = "report.json"
TRAIN_DATA = "train.jsonl"
VALIDATION_DATA = "validation.jsonl"
CHECKPOINTS = "checkpoints"
EVAL = "eval.json"


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half."""
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
    return write_text_atomic(
        path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    )


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    lines = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    return write_text_atomic(path, lines)


def write_toml_atomic(path: Path, data: dict[str, Any]) -> Path:
    import tomli_w

    return write_text_atomic(path, tomli_w.dumps(data))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (killed writer) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
