"""``hwkit profiles list|show``: the hardware profiles hwkit knows, their figures and sources.

Every row says whether that hardware is here, so a profile chosen for planning on a machine
you do not have is never mistaken for the one you are on. No torch import: detection goes
through the backends, which are cheap by contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.runtime import Runtime

profiles_app = typer.Typer(
    name="profiles",
    help="Hardware profiles: list them, or show one with every figure and its source.",
    no_args_is_help=True,
)


def _is_path(value: str) -> bool:
    return value.endswith(".toml") or "/" in value or "\\" in value


def _memory_text(profile: HardwareProfile, host_total: int) -> str:
    """Capacity in GB, or the host's RAM for shared-memory hardware."""
    if profile.memory.capacity_gb is not None:
        return f"{profile.memory.capacity_gb:g} GB"
    if profile.memory.shared_with_host:
        return f"shared: host {host_total / 1e9:.1f} GB"
    return "?"


def _present_names(runtime: Runtime) -> dict[str, list[str]]:
    """Profile name -> ids of the detected devices that profile describes."""
    present: dict[str, list[str]] = {}
    for device in runtime.devices():
        present.setdefault(runtime.profile_for(device).name, []).append(device.id)
    return present


def _active_name(runtime: Runtime) -> tuple[str | None, str | None]:
    """The active profile's name, or the one-line error that choosing it raised."""
    from hwkit.errors import HwkitError

    try:
        return runtime.active_profile.profile.name, None
    except HwkitError as exc:
        return None, exc.one_line()


def _row(
    profile: HardwareProfile,
    owner: str | None,
    present: dict[str, list[str]],
    active: str | None,
    host_total: int,
) -> dict[str, Any]:
    return {
        "name": profile.name,
        "display_name": profile.display_name,
        "vendor": profile.vendor,
        "kind": profile.kind,
        "memory_gb": profile.memory.capacity_gb,
        "shared_with_host": profile.memory.shared_with_host,
        "memory": _memory_text(profile, host_total),
        "budget_fraction": profile.memory.budget_fraction,
        "training_dtype": profile.training.dtype,
        "can_train": profile.compute.can_train,
        "present": profile.name in present,
        "devices": present.get(profile.name, []),
        "active": profile.name == active,
        "plugin": owner,
        "path": profile.path,
    }


def list_profiles(
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List every registered profile and whether its hardware is present here."""
    from hwkit.runtime import current, host_memory_total

    runtime = current()
    registry = runtime.plugins.profiles
    present = _present_names(runtime)
    active, active_error = _active_name(runtime)
    host_total = host_memory_total()
    rows = [_row(p, registry.owner(n), present, active, host_total) for n, p in registry.items()]
    failures = [
        f.one_line() for f in runtime.plugins.failures if f.stage == "hwkit_register_profiles"
    ]
    if json_output:
        out = {"profiles": rows, "active": active, "active_error": active_error, "errors": failures}
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hwkit hardware profiles")
    table.add_column("name", no_wrap=True)
    for col in ("display name", "kind", "memory", "training dtype", "here"):
        table.add_column(col)
    for row in rows:
        here = f"[green]yes[/] ({', '.join(row['devices'])})" if row["present"] else "no"
        name = f"[bold]{row['name']}[/] (active)" if row["active"] else row["name"]
        dtype = (
            row["training_dtype"]
            if row["can_train"]
            else f"{row['training_dtype']} (inference only)"
        )
        table.add_row(name, row["display_name"], row["kind"], row["memory"], dtype, here)
    console = Console()
    console.print(table)
    if active_error:
        console.print(f"[red]active profile:[/] {active_error}")
    for line in failures:
        console.print(f"[red]error:[/] {line}")


def _load_named(runtime: Runtime, name: str) -> tuple[HardwareProfile, str | None]:
    """A registered profile by name, or a TOML file by path (to check one before shipping it)."""
    from hwkit.errors import UnknownNameError
    from hwkit.hardware_profile import load_profile

    registry = runtime.plugins.profiles
    if name not in registry and _is_path(name):
        return load_profile(Path(name).expanduser()), None
    try:
        return registry.get(name), registry.owner(name)
    except UnknownNameError as exc:
        raise UnknownNameError("hardware profile", name, exc.known) from None


def show_profile(
    name: str = typer.Argument(
        ..., help="A profile name (see `hwkit profiles list`) or a TOML path."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show one profile: every field, each figure with its source, and whether it is here."""
    from hwkit.runtime import current, host_memory_total

    runtime = current()
    profile, owner = _load_named(runtime, name)
    if owner is None:  # a file: say which detected devices it would match
        devices = [d.id for d in runtime.devices() if profile.matches(d)]
    else:
        devices = _present_names(runtime).get(profile.name, [])
    active, _ = _active_name(runtime)
    data = profile.model_dump(mode="json")
    data.update(present=bool(devices), devices=devices, active=profile.name == active, plugin=owner)
    if json_output:
        typer.echo(json.dumps(data, indent=2))
        return
    _print_profile(profile, data, host_memory_total())


def _print_profile(profile: HardwareProfile, data: dict[str, Any], host_total: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    here = (
        f"[green]present[/] ({', '.join(data['devices'])})"
        if data["present"]
        else "[yellow]not present here: planning for hardware you don't have[/]"
    )
    vendor = profile.vendor or "any vendor"
    console.print(f"[bold]{profile.name}[/]: {profile.display_name} ({vendor}), {here}")
    console.print(f"[bold]source:[/] {profile.source}")
    if profile.notes:
        console.print(f"[bold]notes:[/] {profile.notes}")
    origin = data["plugin"] or "file"
    console.print(f"[bold]from:[/] {profile.path} (plugin {origin})")

    table = Table(show_header=True, title="fields")
    table.add_column("field")
    table.add_column("value")
    mem, comp, train = profile.memory, profile.compute, profile.training
    fields: list[tuple[str, Any]] = [
        ("match.kind", profile.match.kind),
        ("match.name_patterns", ", ".join(profile.match.name_patterns) or "(any name)"),
        ("memory.capacity", _memory_text(profile, host_total)),
        ("memory.budget_fraction", mem.budget_fraction),
        ("memory.bandwidth_gbps", mem.bandwidth_gbps),
        ("compute.native_dtypes", ", ".join(comp.native_dtypes)),
        ("compute.emulated_dtypes", ", ".join(comp.emulated_dtypes) or "-"),
        ("compute.features", ", ".join(comp.features) or "-"),
        ("compute.compute_capability", comp.compute_capability),
        ("compute.can_train", comp.can_train),
        ("training.dtype", train.dtype),
        ("training.attention", train.attention),
        ("training.lora_rank", train.lora_rank),
        ("training.max_seq_len", train.max_seq_len),
        ("training.quantization", train.quantization),
        ("thermal.tdp_w", profile.thermal.tdp_w),
        ("thermal.max_temp_c", profile.thermal.max_temp_c),
    ]
    for key, value in fields:
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    if profile.throughput:
        peak = Table(title="peak throughput")
        for col in ("metric", "value", "source"):
            peak.add_column(col)
        for t in profile.throughput:
            peak.add_row(t.metric, f"{t.value:g}", t.source)
        console.print(peak)


def register(app: typer.Typer) -> None:
    profiles_app.command("list")(list_profiles)
    profiles_app.command("show")(show_profile)
    app.add_typer(profiles_app, name="profiles")
