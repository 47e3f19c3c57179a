"""Build throw-away installed distributions (dist-info + module) for plugin-loading tests.

importlib.metadata finds any ``*.dist-info`` on ``sys.path``, so a folder put on
PYTHONPATH behaves like a pip-installed third-party plugin, entry points and all.
"""

from __future__ import annotations

from pathlib import Path


def make_distribution(
    root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """Write modules and a dist-info whose ``hwkit`` entry points are ``entry_points``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source, encoding="utf-8")
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hwkit]\n{lines}\n", encoding="utf-8")
    return root
