"""``hwkit data augment``: more SFT rows from a small set (see plugins/data/augment.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from hwkit.plugins.data.augment import AugmentSummary

SOURCE_HELP = (
    "what `hwkit data prepare` reads: a TOML config, rows.jsonl, rows.csv, sqlite:///file.db, "
    "postgresql://user@host/db, hf:LOCAL_DIR"
)


def _print_summary(summary: AugmentSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, title=f"Augmented: {summary.source}")
    table.title_justify = "left"
    dup = f" ({len(summary.duplicate_sources)} duplicates not augmented)"
    table.add_row("rows in", f"{summary.rows_in}" + (dup if summary.duplicate_sources else ""))
    table.add_row(
        "generated",
        f"{summary.attempts} attempts ({summary.reused} reused from the partial file, "
        f"{summary.generator_calls} generator calls)",
    )
    kinds = ", ".join(f"{k} {v}" for k, v in summary.kept_by_kind.items())
    table.add_row("kept", f"{summary.kept} ({kinds})")
    reasons = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_reason.items())
    table.add_row("rejected", f"{summary.rejected}" + (f" ({reasons})" if reasons else ""))
    table.add_row("rows out", f"{summary.rows_out} -> {summary.out}")
    table.add_row("rejects", summary.rejects)
    table.add_row("seconds", f"{summary.seconds:g}")
    Console().print(table)


def register_augment(data_app: typer.Typer) -> None:
    """Add ``augment`` to the ``hwkit data`` group."""

    @data_app.command("augment")
    def augment_cmd(
        source: str = typer.Argument(..., metavar="SOURCE", help=SOURCE_HELP),
        out: Path = typer.Option(
            ..., "--out", "-o", help="OUT.jsonl (also OUT.rejects.jsonl, OUT.jsonl.partial)."
        ),
        model: str = typer.Option("smollm2-135m-instruct", "--model", help="Generator model."),
        runtime: list[str] = typer.Option(
            [], "--runtime", help="Inference runtime(s) acceptable (default: the plan's)."
        ),
        per_row: int = typer.Option(3, "--per-row", help="Generation attempts per source row."),
        kinds: str = typer.Option(
            "followup,continuation", "--kinds", help="Comma-separated: followup, continuation."
        ),
        min_coherence: float = typer.Option(
            0.5, "--min-coherence", help="Minimum cosine of the new text to its source answer."
        ),
        near_duplicate: float = typer.Option(
            0.9, "--near-duplicate", help="Similarity at which a generation is a duplicate."
        ),
        max_repetition: float = typer.Option(
            0.15,
            "--max-repetition",
            help="Most of the new turns' text repeated 5-word sequences may cover (1: off).",
        ),
        require_question: bool = typer.Option(
            True,
            "--require-question/--allow-statements",
            help="Reject a follow-up whose user turn does not end in a question mark.",
        ),
        embedder_model: str = typer.Option(
            "all-MiniLM-L6-v2", "--embedder-model", help="Embedder for the filters."
        ),
        seed: int = typer.Option(0, "--seed", help="Base seed (one per row, kind, attempt)."),
        temperature: float = typer.Option(0.8, "--temperature", help="0 decodes greedily."),
        max_new_tokens: int = typer.Option(96, "--max-new-tokens", help="Per generated turn."),
        limit: int | None = typer.Option(None, "--limit", help="Use only the first N rows."),
        query: str | None = typer.Option(None, "--query", "-q", help="SQL query (databases)."),
        system_prompt: str | None = typer.Option(
            None, "--system-prompt", help="System/persona message for every row."
        ),
        template: str | None = typer.Option(
            None, "--template", help="User turn with {column} placeholders."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Generate follow-up and continuation rows, filter them (text checks, repetition,
        coherence, near-duplicates) and write source rows + kept rows to OUT; resumable
        through OUT.jsonl.partial."""
        from hwkit.plugins.data.augment import AugmentSettings, augment
        from hwkit.plugins.data.cli_options import DataOptions

        settings = AugmentSettings(
            model=model,
            runtimes=tuple(runtime),
            per_row=per_row,
            kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
            min_coherence=min_coherence,
            near_duplicate=near_duplicate,
            max_repetition=max_repetition,
            require_question=require_question,
            embedder_model=embedder_model,
            seed=seed,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            limit=limit,
        )
        settings.validate()  # before the source is read
        options = DataOptions(query=query, system_prompt=system_prompt, template=template)
        summary = augment(options.config(source), out, settings)
        if as_json:
            typer.echo(json.dumps(summary.to_json_dict(), indent=2, ensure_ascii=False))
        else:
            _print_summary(summary)
