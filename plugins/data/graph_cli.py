"""``hwkit data graph-features``: network features joined onto rows (see plugins/data/graph.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

SOURCE_HELP = "rows.csv, rows.jsonl, sqlite:///file.db or postgresql://user@host/db"


def _print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, title=f"Graph features: {report['rows_source']}")
    table.title_justify = "left"
    table.add_row("rows", f"{report['rows_out']} of {report['rows_in']} (id {report['id_column']})")
    table.add_row(
        "graph",
        f"{report['nodes']} nodes, {report['edges']} edges "
        f"({report['source_column']} -> {report['target_column']})",
    )
    examples = ", ".join(report["unknown_id_examples"])
    table.add_row(
        "unknown ids",
        f"{report['unknown_id_edges']} edges, {report['unknown_ids']} ids not in the rows"
        + (f" (e.g. {examples})" if examples else ""),
    )
    table.add_row(
        "communities",
        f"{report['communities']} (largest {', '.join(map(str, report['largest_communities']))})",
    )
    top = ", ".join(f"{t['id']} {t['pagerank']:.4f}" for t in report["top_pagerank"])
    table.add_row("top pagerank", top or "none")
    missing = {k: v for k, v in report["rate_missing"].items() if v}
    if report["rate_columns"]:
        note = ", ".join(f"{k} {v} not numeric" for k, v in missing.items())
        table.add_row("rates", ", ".join(report["rate_columns"]) + (f" ({note})" if note else ""))
    reasons = ", ".join(f"{k} {v}" for k, v in report["rejected_by_reason"].items())
    table.add_row("rejected", f"{report['rejected']}" + (f" ({reasons})" if reasons else ""))
    table.add_row("written", f"{report['out']}, {report['rejects_path']}")
    table.add_row("seconds", f"{report['seconds']:g}")
    Console().print(table)


def register_graph(data_app: typer.Typer) -> None:
    """Add ``graph-features`` to the ``hwkit data`` group."""

    @data_app.command("graph-features")
    def graph_features_cmd(
        rows: str = typer.Option(..., "--rows", help=f"The rows to join onto: {SOURCE_HELP}."),
        edges: str = typer.Option(..., "--edges", help=f"The edge list: {SOURCE_HELP}."),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="OUT.jsonl or OUT.csv (also OUT.report.json, OUT.rejects.jsonl).",
        ),
        id_col: str | None = typer.Option(
            None, "--id", help="Rows' id column the edges refer to (default: guessed)."
        ),
        source_col: str | None = typer.Option(
            None, "--source-col", help="Edge source column (default: source, follower_id...)."
        ),
        target_col: str | None = typer.Option(
            None, "--target-col", help="Edge target column (default: target, followed_id...)."
        ),
        query: str | None = typer.Option(None, "--query", "-q", help="SQL query for --rows."),
        edges_query: str | None = typer.Option(
            None, "--edges-query", help="SQL query for --edges."
        ),
        rate: list[str] = typer.Option(
            [], "--rate", help="Add COLUMN_per_follower = COLUMN / max(followers, 1); repeatable."
        ),
        follower_col: str = typer.Option(
            "follower_count", "--follower-col", help="Follower count column for --rate."
        ),
        seed: int = typer.Option(0, "--seed", help="Louvain seed."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """PageRank, degrees and Louvain communities from an edge list, joined onto rows by id;
        edges to ids not in the rows are kept in the graph and counted."""
        from hwkit.plugins.data.graph import graph_features, output_paths, write_outputs

        output_paths(out)  # a bad suffix fails before anything is read
        result = graph_features(
            rows,
            edges,
            id_col=id_col,
            query=query,
            edges_query=edges_query,
            source_col=source_col,
            target_col=target_col,
            rate_cols=rate,
            follower_col=follower_col,
            seed=seed,
        )
        write_outputs(result, out)
        if as_json:
            typer.echo(json.dumps(result.report, indent=2, ensure_ascii=False, default=str))
        else:
            _print_summary(result.report)
