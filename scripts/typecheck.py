"""Run mypy on the hwkit package as it installs.

setuptools' package-dir maps core/ to ``hwkit`` and backends/, plugins/, profiles/ under it;
mypy reads folders, so this builds a throw-away tree of symlinks with that shape.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"backends": "backends", "plugins": "plugins", "profiles": "profiles"}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hwkit-typecheck-") as tmp:
        pkg = Path(tmp) / "hwkit"
        pkg.mkdir()
        for entry in (REPO / "core").iterdir():
            if entry.name != "__pycache__":
                (pkg / entry.name).symlink_to(entry)
        for name, folder in MAPPED.items():
            (pkg / name).symlink_to(REPO / folder)
        cmd = [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "-p",
            "hwkit",
        ]
        return subprocess.call(cmd, cwd=tmp, env={"MYPYPATH": tmp, "PATH": "/usr/bin:/bin"})


if __name__ == "__main__":
    sys.exit(main())
