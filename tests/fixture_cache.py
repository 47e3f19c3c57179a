"""Expensive test fixtures built once for every test process (pytest-xdist workers too).

``built_once`` builds under a file lock in the test cache (``$HWKIT_CACHE_DIR``, inside the
checkout), keyed by the source files the output depends on, so a changed exporter or
trainer builds afresh; the first process builds, the others wait and reuse the result.
Fixtures that use it must treat the folder as read-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from hwkit.paths import cache_root


def built_once(name: str, sources: Iterable[Path], build: Callable[[Path], object]) -> Path:
    """The folder ``build(folder)`` fills, built once per version of ``sources``."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    root = cache_root() / "test-fixtures"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{digest.hexdigest()[:12]}"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            staging = root / f".{name}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            build(staging)
            (staging / ".complete").touch()
            os.replace(staging, target)
    return target


def package_files(module: object, pattern: str = "*.py") -> list[Path]:
    """The files of a module's package folder matching ``pattern`` (a fixture's sources)."""
    return sorted(Path(str(getattr(module, "__file__", ""))).parent.glob(pattern))
