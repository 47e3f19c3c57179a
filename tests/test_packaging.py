"""The package-dir mapping ships every package and no stray top-level modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = CONFIG["tool"]["setuptools"]


def _package_dirs() -> dict[str, Path]:
    """Every folder with an __init__.py under the mapped roots, by its import name."""
    found = {}
    for import_name, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if any(part.startswith((".", "_")) or part == "build" for part in rel.parts):
                continue
            name = ".".join([import_name, *rel.parts]) if rel.parts else import_name
            found[name] = init.parent
    return found


def test_every_package_folder_is_listed() -> None:
    listed = set(SETUPTOOLS["packages"])
    missing = sorted(set(_package_dirs()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_listed_packages_exist() -> None:
    absent = sorted(set(SETUPTOOLS["packages"]) - set(_package_dirs()))
    assert not absent, f"listed in pyproject.toml but no folder with __init__.py: {absent}"


def test_no_top_level_core_or_plugins_module(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, sys; "
        "print([m for m in ('core', 'plugins', 'backends', 'profiles') if u.find_spec(m)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_ships_data_kit_and_entry_points(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("hwkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (
        "hwkit/profiles/h200.toml",
        "hwkit/profiles/cpu.toml",
        "hwkit/backends/cpu.py",
        "hwkit/testing/suite/test_registered.py",
        "hwkit/cli/__init__.py",
        "hwkit/py.typed",
    ):
        assert path in names, path
    assert not any(n.startswith(("core/", "plugins/", "backends/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[hwkit]" in text and "cpu = hwkit.backends.cpu" in text
    assert "[pytest11]" in text
