"""Serving: the OpenAI-compatible chat server (``hwkit serve``) and the terminal chat
(``hwkit chat``). Models load through the core's generation plans (``hwkit.jobs``) onto
the device and runtime each plan chose.

Importing this package is cheap: FastAPI, uvicorn and torch load when a command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.serving.cli import register

    register(cli)
