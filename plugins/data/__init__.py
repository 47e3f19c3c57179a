"""Training data: sources, mappings to chat messages, preference pairs, filters, readiness.

``prepare(DataConfig(...))`` returns train/validation rows in trl's conversational formats
plus a readiness report; every row read is kept or written to the rejects with a reason.
Heavy libraries (sqlalchemy, datasets, datasketch) are imported only by the sources and
filters that use them. The plugin brings the ``hwkit data`` commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.errors import EXIT_NOT_READY
from hwkit.hookspecs import hookimpl
from hwkit.plugins.data.config import ColumnMapping, DataConfig, ReadinessThresholds
from hwkit.plugins.data.prepare import PreparedData, prepare
from hwkit.plugins.data.readiness import ReadinessReport
from hwkit.plugins.data.sources import mask_url

if TYPE_CHECKING:
    import typer

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
