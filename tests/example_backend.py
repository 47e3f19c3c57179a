"""Make the example third-party backend (examples/hwkit-example-backend) an installed plugin
for the tests only.

Installing hwkit must not put an emulated accelerator into a user's ``hwkit doctor``, so
nothing installs the example into the environment: the tests put its source folder and a
dist-info (with its ``hwkit`` entry point) on ``sys.path`` and ``PYTHONPATH``, which is all
importlib.metadata needs to see a pip-installed distribution, in this process and in the
``hwkit`` subprocesses the tests start.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "examples" / "hwkit-example-backend" / "src"
DIST = "hwkit_example_backend-0.1.0.dist-info"


def activate() -> Path:
    """Put the example backend on the import and metadata paths (idempotent)."""
    root = Path(tempfile.gettempdir()) / f"hwkit-example-backend-{os.getuid()}"
    info = root / DIST
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hwkit-example-backend\nVersion: 0.1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[hwkit]\nemu = hwkit_example_backend\n", encoding="utf-8"
    )
    paths = [str(SOURCE), str(root)]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *(p for p in current if p not in paths)])
    return root
