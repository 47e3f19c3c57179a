"""Run the ``hwkit`` command as a user does: a fresh interpreter, no profile or plugin
overrides leaking in from the developer's shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLEARED = ("HWKIT_PROFILE", "HWKIT_DISABLE_PLUGINS")


def run_hwkit(
    *args: str, pythonpath: Path | None = None, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m hwkit ARGS`` with ``env`` set; ``pythonpath`` adds fake installed plugins."""
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    if pythonpath is not None:
        full["PYTHONPATH"] = str(pythonpath)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "hwkit", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout,
    )
