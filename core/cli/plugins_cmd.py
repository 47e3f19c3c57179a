"""``hwkit plugins``: what is installed, what each registered, and what failed to load."""

from __future__ import annotations

import json
from typing import Any

import typer


def plugins(
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List plugins, the names each registered, load errors and disabled plugins."""
    from hwkit.plugin_manager import HOOKS
    from hwkit.runtime import current

    pm = current().plugins
    registered: dict[str, list[str]] = {p.name: [] for p in pm.plugins}
    for registry_attr, what in HOOKS.values():
        registry = getattr(pm, registry_attr)
        for name in registry.names():
            registered.setdefault(registry.owner(name), []).append(f"{what}:{name}")
    rows: list[dict[str, Any]] = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "module": p.module,
            "registered": registered.get(p.name, []),
        }
        for p in pm.plugins
    ]
    errors = [f.one_line() for f in pm.failures]
    disabled = [p.name for p in pm.skipped]
    if json_output:
        typer.echo(json.dumps({"plugins": rows, "errors": errors, "disabled": disabled}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hwkit plugins")
    for col in ("plugin", "distribution", "module", "registered"):
        table.add_column(col)
    for row in rows:
        dist = f"{row['distribution']} {row['version'] or ''}".strip()
        table.add_row(row["name"], dist, row["module"], ", ".join(row["registered"]) or "-")
    console = Console()
    console.print(table)
    for line in errors:
        console.print(f"[red]error:[/] {line}")
    if disabled:
        console.print(f"disabled by HWKIT_DISABLE_PLUGINS: {', '.join(disabled)}")


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
