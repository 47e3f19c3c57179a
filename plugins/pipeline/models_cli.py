"""``hwkit models list|show|promote|rollback``: the local model registry from the shell.

Every command takes ``--registry DIR`` (default ``$HWKIT_REGISTRY_DIR`` or
``~/.local/share/hwkit/registry``). Errors are hwkit errors: the CLI prints one line and the
documented exit code (a missing model or version: 4; a rollback with nowhere to go: 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from hwkit.plugins.pipeline.registry import ModelRegistry, ModelVersion

models_app = typer.Typer(
    help="The local model registry: versions, the champion, rollback.",
    no_args_is_help=True,
)

REGISTRY = typer.Option(
    None,
    "--registry",
    help="Registry directory (default: $HWKIT_REGISTRY_DIR or ~/.local/share/hwkit/registry).",
)
JSON = typer.Option(False, "--json", help="Print JSON.")
REASON = typer.Option(None, "--reason", help="Why; kept in the model's history.")


def _version_dict(registry: ModelRegistry, name: str, v: ModelVersion) -> dict[str, Any]:
    return {**v.to_dict(), "path": str(registry.version_dir(name, v.version))}


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def list_models(registry: Path | None = REGISTRY, as_json: bool = JSON) -> None:
    """Registered models: how many versions, the champion and when it was registered."""
    reg = ModelRegistry(registry)
    rows: list[dict[str, Any]] = []
    for name in reg.names():
        champion = reg.champion(name)
        rows.append(
            {
                "name": name,
                "versions": len(reg.versions(name)),
                "champion": None if champion is None else champion.version,
                "champion_created": None if champion is None else champion.created,
            }
        )
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        typer.echo(f"no models in {reg.root}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {reg.root}")
    for column in ("name", "versions", "champion", "champion created"):
        table.add_column(column)
    for r in rows:
        champ = "-" if r["champion"] is None else f"v{r['champion']}"
        table.add_row(r["name"], str(r["versions"]), champ, r["champion_created"] or "-")
    Console().print(table)


def show(
    name: str = typer.Argument(..., help="A model name."),
    ref: str | None = typer.Argument(None, help="A version (3, v3) or alias (champion, latest)."),
    registry: Path | None = REGISTRY,
    as_json: bool = JSON,
) -> None:
    """One version's artifacts, metrics and run; without REF, every version and the history."""
    from rich.console import Console
    from rich.table import Table

    reg = ModelRegistry(registry)
    if ref is not None:
        version = reg.get(name, ref)
        data = _version_dict(reg, name, version)
        if as_json:
            _echo_json(data)
            return
        table = Table(title=f"{name} v{version.version}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        table.add_row("created", version.created)
        table.add_row("path", data["path"])
        for field, value in (("run", version.run), ("source", version.source)):
            table.add_row(field, value or "-")
        for role, path in sorted(version.artifacts.items()):
            table.add_row(f"artifact {role}", path)
        for metric, number in sorted(version.metrics.items()):
            table.add_row(f"metric {metric}", f"{number:.4g}")
        for tag, text in sorted(version.tags.items()):
            table.add_row(f"tag {tag}", text)
        Console().print(table)
        return
    versions = reg.versions(name)
    champion = reg.champion(name)
    history = reg.history(name)
    if as_json:
        _echo_json(
            {
                "name": name,
                "champion": None if champion is None else champion.version,
                "versions": [_version_dict(reg, name, v) for v in versions],
                "history": [asdict(h) for h in history],
            }
        )
        return
    console = Console()
    table = Table(title=f"{name}: versions")
    for column in ("version", "created", "metrics", "run"):
        table.add_column(column)
    for v in versions:
        mark = " (champion)" if champion is not None and v.version == champion.version else ""
        metrics = ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()))
        table.add_row(f"v{v.version}{mark}", v.created, metrics or "-", v.run or "-")
    console.print(table)
    log = Table(title=f"{name}: history")
    for column in ("time", "action", "version", "previous", "reason"):
        log.add_column(column)
    for h in history:
        previous = "-" if h.previous is None else f"v{h.previous}"
        log.add_row(h.time, h.action, f"v{h.version}", previous, h.reason or "-")
    console.print(log)


def promote(
    name: str = typer.Argument(..., help="A model name."),
    ref: str = typer.Argument(..., help="A version (3, v3) or alias (latest)."),
    reason: str | None = REASON,
    registry: Path | None = REGISTRY,
) -> None:
    """Make a version the champion; the one it replaces stays reachable by rollback."""
    reg = ModelRegistry(registry)
    before = reg.champion(name)
    version = reg.promote(name, ref, reason=reason)
    if before is not None and before.version == version.version:
        typer.echo(f"{name}: v{version.version} is already the champion")
        return
    was = "none" if before is None else f"v{before.version}"
    typer.echo(f"{name}: v{version.version} is the champion (was {was})")


def rollback(
    name: str = typer.Argument(..., help="A model name."),
    reason: str | None = REASON,
    registry: Path | None = REGISTRY,
) -> None:
    """Make the previous champion the champion again."""
    reg = ModelRegistry(registry)
    before = reg.champion(name)
    version = reg.rollback(name, reason=reason)
    was = "none" if before is None else f"v{before.version}"
    typer.echo(f"{name}: champion rolled back from {was} to v{version.version}")


def register(app: typer.Typer) -> None:
    models_app.command("list")(list_models)
    models_app.command("show")(show)
    models_app.command("promote")(promote)
    models_app.command("rollback")(rollback)
    app.add_typer(models_app, name="models")
