"""Training data: sources, mappings to chat messages, preference pairs, filters, readiness.

``prepare(DataConfig(...))`` returns train/validation rows in trl's conversational formats
plus a readiness report; every row read is kept or written to the rejects with a reason.
Heavy libraries (sqlalchemy, datasets, datasketch) are imported only by the sources and
filters that use them. The plugin brings the ``hwkit data`` commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hwkit.errors import EXIT_NOT_READY
from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer

    from hwkit.plugins.data.config import ColumnMapping, DataConfig, ReadinessThresholds
    from hwkit.plugins.data.pipeline import PreparedData, prepare
    from hwkit.plugins.data.readiness import ReadinessReport
    from hwkit.plugins.data.sources import mask_url

# Loaded on first use (PEP 562): the plugin is imported at every `hwkit` start for its
# commands, and pydantic models and numpy filters are not needed for that.
_LAZY = {
    "ColumnMapping": "config",
    "DataConfig": "config",
    "ReadinessThresholds": "config",
    "PreparedData": "pipeline",
    "prepare": "pipeline",
    "ReadinessReport": "readiness",
    "mask_url": "sources",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXIT_NOT_READY",
    "ColumnMapping",
    "DataConfig",
    "PreparedData",
    "ReadinessReport",
    "ReadinessThresholds",
    "mask_url",
    "prepare",
]


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.data.cli import register

    register(cli)
