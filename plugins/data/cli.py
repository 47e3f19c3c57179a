"""``hwkit data check|prepare``: a readiness report for a training data set, and the prepared
train/validation/rejects files.

Exit codes: 0 ready (or prepared); 7 (``EXIT_NOT_READY``) when ``check`` finds a minimum
unmet, or ``prepare --require-ready`` does; the usual hwkit codes for bad input (3 config,
4 not found, 6 database unreachable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hwkit.plugins.data.cli_options import DataOptions, with_data_options

if TYPE_CHECKING:
    from hwkit.plugins.data import ReadinessReport

CONFIG_HELP = (
    "a TOML config (its \\[data] table or the whole file), or a source: rows.jsonl, "
    "rows.csv, sqlite:///file.db, postgresql://user@host/db, hf:LOCAL_DIR"
)


def _print_report(report: ReadinessReport, extra: dict[str, str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Readiness: {report.source}", title_justify="left")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("minimum", justify="right")
    table.add_column("")
    for c in report.checks:
        table.add_row(
            c.name,
            f"{c.value:g}",
            f"{c.minimum:g}",
            "[green]ok[/green]" if c.met else "[red]not met[/red]",
        )
    console.print(table)
    rows = Table(show_header=False, box=None)
    rows.add_row("rows read", str(report.rows_in))
    rows.add_row(
        "kept", f"{report.rows_kept} ({report.train} train, {report.validation} validation)"
    )
    reasons = ", ".join(f"{k} {v}" for k, v in report.rejected_by_reason.items())
    rows.add_row("rejected", f"{report.rows_rejected}" + (f" ({reasons})" if reasons else ""))
    rows.add_row(
        "words per answer",
        f"mean {report.words_per_answer_mean:g}, median {report.words_per_answer_median:g}",
    )
    cats = ", ".join(f"{k} {v}" for k, v in list(report.categories.items())[:10])
    more = len(report.categories) - 10
    rows.add_row("categories", (cats + (f", … {more} more" if more > 0 else "")) or "none")
    for key, value in (extra or {}).items():
        rows.add_row(key, value)
    console.print(rows)
    style = "green" if report.ready else "red"
    console.print(f"[{style}]{report.summary()}[/{style}]")


JSON_OUT = typer.Option(False, "--json", help="Print the report as JSON.")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(
        help="Training data: readiness check and prepared files.", no_args_is_help=True
    )

    @data_app.command("check")
    @with_data_options(split=False)
    def check(
        target: str = typer.Argument(..., metavar="CONFIG_OR_SOURCE", help=CONFIG_HELP),
        options: DataOptions = DataOptions(),
        rejects: Path | None = typer.Option(None, "--rejects", help="Write rejects here."),
        as_json: bool = JSON_OUT,
    ) -> None:
        """Readiness report: rows, words per answer, categories, minimums. Exit 7 if not ready."""
        from hwkit.plugins.data import EXIT_NOT_READY, prepare

        data = prepare(options.config(target), rejects_path=rejects)
        if as_json:
            out = data.report.to_json_dict()
            out["rejects_path"] = str(data.rejects_path) if data.rejects_path else None
            typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        else:
            extra = {"rejects file": str(data.rejects_path)} if data.rejects_path else None
            _print_report(data.report, extra)
        if not data.report.ready:
            raise typer.Exit(EXIT_NOT_READY)

    @data_app.command("prepare")
    @with_data_options(split=True)
    def prepare_cmd(
        target: str = typer.Argument(..., metavar="CONFIG_OR_SOURCE", help=CONFIG_HELP),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Folder for train.jsonl, validation.jsonl, rejects.jsonl and report.json.",
        ),
        options: DataOptions = DataOptions(),
        require_ready: bool = typer.Option(
            False, "--require-ready", help="Exit 7 when a minimum is not met."
        ),
        as_json: bool = JSON_OUT,
    ) -> None:
        """Write the prepared data set (each file atomically) and print its report."""
        from hwkit.plugins.data import EXIT_NOT_READY, prepare

        data = prepare(options.config(target))
        paths = data.write(out)
        if as_json:
            report = data.report.to_json_dict()
            report["files"] = {k: str(v) for k, v in paths.items()}
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            _print_report(data.report, {"written": str(out)})
        if require_ready and not data.report.ready:
            raise typer.Exit(EXIT_NOT_READY)

    @data_app.command("sample")
    def sample(
        sqlite: Path | None = typer.Option(
            None, "--sqlite", help="Also build a SQLite copy (table reflections) at this path."
        ),
        as_json: bool = JSON_OUT,
    ) -> None:
        """Where the bundled SYNTHETIC persona sample is (and its SQLite copy with --sqlite)."""
        from hwkit.plugins.data.samples import (
            PERSONA_QUERY,
            PERSONA_SYSTEM_PROMPT,
            persona_sample_path,
            persona_sqlite_url,
        )

        info = {"jsonl": str(persona_sample_path()), "system_prompt": PERSONA_SYSTEM_PROMPT}
        if sqlite is not None:
            info["sqlite_url"] = persona_sqlite_url(sqlite)
            info["query"] = PERSONA_QUERY
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        for key, value in info.items():
            typer.echo(f"{key}: {value}")

    from hwkit.plugins.data.augment_cli import register_augment

    register_augment(data_app)
    from hwkit.plugins.data.graph_cli import register_graph

    register_graph(data_app)
    app.add_typer(data_app, name="data")
