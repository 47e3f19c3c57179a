"""``hwkit rewards list|pairs``: the registered rewards, and DPO pairs from a reward."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

rewards_app = typer.Typer(
    help="Rewards: what is registered, and preference pairs scored by a reward.",
    no_args_is_help=True,
)

JSON = typer.Option(False, "--json", help="Print JSON.")


def list_rewards(as_json: bool = JSON) -> None:
    """The registered rewards, the plugin that registers each and what it scores."""
    from hwkit.runtime import current

    registry = current().plugins.rewards
    rows = [
        {"name": name, "plugin": registry.owner(name), "description": cls.description}
        for name, cls in registry.items()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rewards")
    for column in ("name", "plugin", "description"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["plugin"], r["description"])
    Console().print(table)


def pairs(
    config: Path = typer.Argument(..., help="A pairs config: [pairs] and [[reward]] tables."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the pairs (JSONL)."),
    as_json: bool = JSON,
) -> None:
    """Score every completion with the config's reward and write preference pairs (higher
    reward chosen) for the dpo trainer: [data] source = OUT, kind = "preference"."""
    from hwkit.plugins.rewards.pairs import run_pairs
    from hwkit.runtime import current

    summary: dict[str, Any] = run_pairs(config, out, current().plugins)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    typer.echo(
        f"{summary['pairs']} pairs from {summary['groups']} groups ({summary['rows']} rows) "
        f"-> {summary['out']}"
    )
    skipped = {k: summary[k] for k in ("ties", "below_margin", "identical", "failed")}
    if any(skipped.values()):
        typer.echo("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items() if v))
    for key, stats in summary["rewards"].items():
        mean = "-" if stats["mean"] is None else f"{stats['mean']:.4f}"
        typer.echo(
            f"  {key}: weight {stats['weight']:g}, mean {mean}, "
            f"failures {stats['failures']}/{stats['items']}"
        )


def register(app: typer.Typer) -> None:
    rewards_app.command("list")(list_rewards)
    rewards_app.command("pairs")(pairs)
    app.add_typer(rewards_app, name="rewards")
