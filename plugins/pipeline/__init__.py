"""From database to deployed model, with gates: the local model registry (versions, the
``champion`` alias, promote and rollback), metric gates a candidate must clear, the
``hwkit pipeline`` runner (data -> train -> evaluate -> gate -> export -> deploy -> verify ->
promote or roll back) and the ``hwkit models`` commands.

Light at import: the command group is imported when the CLI is built, and it imports only
typer and the registry's standard-library code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.pipeline import models_cli, pipeline_cli

    models_cli.register(cli)
    pipeline_cli.register(cli)
