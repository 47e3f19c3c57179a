"""A run directory's files, each written atomically (temp file in the folder, then rename).

A training run directory holds: the weights (adapter, merged or full) and tokenizer,
``plan.json`` and ``config.toml`` (written by the job flow before training),
``result.json`` (after), ``metrics.jsonl``, ``loss.png``, ``rejects.jsonl``,
``report.json``, the prepared ``train.jsonl``/``validation.jsonl``, ``log.jsonl`` (the
run's structured log) and ``checkpoints/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.atomic import write_text_atomic

if TYPE_CHECKING:
    from pydantic import BaseModel

PLAN = "plan.json"
CONFIG = "config.toml"
RESULT = "result.json"
METRICS = "metrics.jsonl"
LOG = "log.jsonl"
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


def to_toml_dict(config: BaseModel) -> dict[str, Any]:
    """A TOML-writable dict of a config (no None values; paths as strings)."""
    return _drop_none(config.model_dump(mode="json"))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


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
