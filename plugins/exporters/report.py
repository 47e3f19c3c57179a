"""``export.json``: the figures of every artefact written into one output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwkit.atomic import write_json_atomic

REPORT = "export.json"


def update_report(out_dir: Path, key: str, figures: dict[str, Any]) -> Path:
    """Merge one export's figures into ``out_dir/export.json`` (kept per artefact)."""
    path = out_dir / REPORT
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
    data[key] = figures
    return write_json_atomic(path, data)


def read_figures(artefact: Path) -> dict[str, Any]:
    """The figures recorded for ``artefact``: its own ``export.json`` for a folder that has
    one, else its entry in the ``export.json`` beside it (empty when there is none)."""
    own = artefact / REPORT
    if artefact.is_dir() and own.is_file():
        figures: dict[str, Any] = json.loads(own.read_text(encoding="utf-8"))
        return figures
    beside = artefact.parent / REPORT
    if beside.is_file():
        data = json.loads(beside.read_text(encoding="utf-8"))
        entry = data.get(artefact.name)
        if isinstance(entry, dict):
            return entry
    return {}
