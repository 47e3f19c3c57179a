"""Write-then-rename helpers: an export appears under its final name only once verified."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwkit.atomic import write_json_atomic

REPORT = "export.json"


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
    """Yield a temporary directory beside ``final``; swap it in when the block succeeds."""
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
