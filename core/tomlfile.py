"""Reading a user's TOML file (a trainer config, a pipeline, a data config) with the
one-line errors every such file gets: the file is missing, or its TOML is broken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomllib

from hwkit.errors import ConfigError, NotFoundError


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """The parsed document; ``what`` names the file in the error ("pipeline file")."""
    if not path.is_file():
        raise NotFoundError(f"{what} {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
