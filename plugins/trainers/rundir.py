"""The run directory's files, each written atomically (temp file in the folder, then rename).

A run directory holds: the weights (adapter or merged) and tokenizer, ``plan.json``,
``config.toml``, ``metrics.jsonl``, ``loss.png``, ``rejects.jsonl``, ``report.json``,
the prepared ``train.jsonl``/``validation.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwkit.atomic import (
    write_text_atomic,
)

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
