"""Answers from your documents: retrieval-augmented generation over hwkit indexes with
self-reflection (grade, rewrite, cite, check support, rate utility), ``hwkit rag ask`` and
``hwkit rag eval``.

Light at import: the retriever, the generator and the cross-encoder load inside the
commands, through the core's plans (``hwkit.jobs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.rag.cli import register

    register(cli)
