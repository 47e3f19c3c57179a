"""``hwkit doctor``: devices, backends with reasons, the active profile and why, plugin errors."""

from __future__ import annotations

import json
from typing import Any

import typer

from hwkit.errors import HwkitError


def _gb(value: int | None) -> str:
    return "?" if value is None else f"{value / 1e9:.1f} GB"


def collect(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything doctor reports, as plain data (the ``--json`` output)."""
    from hwkit.runtime import Runtime, current

    runtime = current() if env is None else Runtime(current().plugins, env)
    pm = runtime.plugins
    backends = []
    for name in pm.backends.names():
        backend = runtime.backend(name)
        status = backend.status()
        backends.append(
            {
                "name": name,
                "plugin": pm.backends.owner(name),
                "available": status.available,
                "reason": status.reason,
                "details": status.details,
                "devices": [d.info().to_dict() for d in backend.devices()],
            }
        )
    report: dict[str, Any] = {"backends": backends}
    try:
        active = runtime.active_profile
        profile = active.profile
        from hwkit.runtime import host_memory_total

        report["profile"] = {
            "name": profile.name,
            "display_name": profile.display_name,
            "source": active.source,
            "reason": active.reason,
            "present": active.present,
            "device": active.device_id,
            "memory_gb": profile.capacity_bytes(host_memory_total()) / 1e9,
            "budget_gb": profile.budget_bytes(host_memory_total()) / 1e9,
            "shared_with_host": profile.memory.shared_with_host,
            "training_dtype": profile.training.dtype,
            "file": profile.path,
        }
    except HwkitError as exc:
        report["profile"] = {"error": exc.one_line(), "exit_code": exc.exit_code}
    report["plugins"] = [
        {"name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version}
        for p in pm.plugins
    ]
    report["plugin_errors"] = [
        {"plugin": f.plugin, "distribution": f.distribution, "stage": f.stage, "error": f.error}
        for f in pm.failures
    ]
    report["disabled_plugins"] = [p.name for p in pm.skipped]
    return report


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Backends and devices", show_lines=False)
    for col in ("backend", "status", "device", "memory (free / total)", "notes"):
        table.add_column(col)
    for b in report["backends"]:
        if not b["available"]:
            table.add_row(b["name"], "[red]unavailable[/]", "", "", b["reason"] or "")
            continue
        for d in b["devices"]:
            mem = d["memory"]
            caps = d["capabilities"]
            notes = ", ".join(caps["dtypes"])
            if not caps["can_train"]:
                notes += "; inference only"
            if caps["shared_memory"]:
                notes += "; shared memory"
            table.add_row(
                b["name"],
                "[green]available[/]",
                f"{d['id']} {d['name']}",
                f"{_gb(mem['free'])} / {_gb(mem['total'])}",
                notes,
            )
    console.print(table)
    prof = report["profile"]
    if "error" not in prof:
        here = (
            "present"
            if prof["present"]
            else "[yellow]NOT PRESENT: planning for hardware you don't have[/]"
        )
        console.print(
            f"[bold]Active profile:[/] {prof['name']} ({prof['display_name']}), {here}\n"
            f"  why: {prof['reason']}\n"
            f"  memory {prof['memory_gb']:.1f} GB, budget {prof['budget_gb']:.1f} GB"
            f"{' (shared with host)' if prof['shared_with_host'] else ''}, "
            f"training dtype {prof['training_dtype']}"
        )
    names = ", ".join(p["name"] for p in report["plugins"])
    console.print(f"[bold]Plugins:[/] {names}")
    if report["disabled_plugins"]:
        console.print(f"[bold]Disabled:[/] {', '.join(report['disabled_plugins'])}")
    for err in report["plugin_errors"]:
        dist = f" ({err['distribution']})" if err["distribution"] else ""
        console.print(
            f"[red]plugin error[/] {err['plugin']}{dist} at {err['stage']}: {err['error']}"
        )


def doctor(
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show devices, backends (and why one is unavailable), the active profile, plugin errors."""
    report = collect()
    if json_output:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    error = report["profile"].get("error")
    if error:  # the rest of the report is shown, but a bad HWKIT_PROFILE is still an error
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(report["profile"]["exit_code"])


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
