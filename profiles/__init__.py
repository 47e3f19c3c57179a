"""Built-in hardware profiles: one TOML file each, registered through the profiles hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwkit.hookspecs import hookimpl

PROFILE_DIR = Path(__file__).resolve().parent


@hookimpl
def hwkit_register_profiles(register: Any) -> None:
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        register(path)
