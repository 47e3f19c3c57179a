"""``hwkit rag ask`` and ``hwkit rag eval``: answers from an index, and their scores.

Only typer is imported at module level; the index, the generator and the cross-encoder
load inside the commands, through their plans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hwkit.errors import UsageError

if TYPE_CHECKING:
    from hwkit.plugins.rag.pipeline import RagPipeline

rag_app = typer.Typer(
    help="Answers from your documents: retrieval-augmented generation with self-reflection.",
    no_args_is_help=True,
)

DEFAULT_MODEL = "smollm2-135m-instruct"


def _pipeline(o: dict[str, Any]) -> RagPipeline:
    """The pipeline a command's options describe (the options shared by ask and eval)."""
    from hwkit.plugins.rag.loading import open_pipeline
    from hwkit.plugins.rag.pipeline import RagSettings

    settings = RagSettings(
        mode=o["mode"],
        k=o["k"],
        candidates=max(o["candidates"], o["k"]),
        reflect=o["reflect"],
        max_rounds=o["max_rounds"],
        chain_of_thought=o["cot"],
        max_new_tokens=o["max_tokens"],
        confidence=o["confidence"],
    )
    return open_pipeline(
        o["index"],
        o["model"],
        settings,
        grader=o["grader"],
        rerank_model=o["rerank_model"],
        support=o["support"],
        embedder_model=o["embedder_model"],
        runtime_names=(o["runtime"],) if o["runtime"] else (),
        device=o["device"],
    )


# Options shared by ask and eval (typer reads them from each command's signature).
MODEL = typer.Option(
    DEFAULT_MODEL, "--model", "-m", help="Generator: a name, directory, run, .gguf or IR."
)
MODE = typer.Option("always", "--mode", help="Retrieve: always, adaptive or never.")
K = typer.Option(3, "-k", "--top-k", min=1, help="Passages given to the generator.")
CANDIDATES = typer.Option(20, "--candidates", min=1, help="Retrieved per round when reflecting.")
REFLECT = typer.Option(
    False, "--reflect", help="Grade passages, rewrite the query, check support, refine."
)
ROUNDS = typer.Option(3, "--max-rounds", min=1, help="Retrieval rounds / answer candidates.")
GRADER = typer.Option("judge", "--grader", help="Relevance grader: judge or cross-encoder.")
RERANK = typer.Option(None, "--rerank-model", help="Cross-encoder directory or run.")
SUPPORT = typer.Option("overlap", "--support", help="Support check: overlap or judge.")
COT = typer.Option(False, "--cot", help="Think step by step before the answer.")
MAX_TOKENS = typer.Option(48, "--max-tokens", min=1, help="Tokens per answer.")
CONFIDENCE = typer.Option(0.6, "--confidence", help="Adaptive: retrieve below this confidence.")
RUNTIME = typer.Option(None, "--runtime", help="Inference runtime (default: the plan's).")
DEVICE = typer.Option(None, "--device", help="Device id (default: the plan's).")
EMBEDDER_MODEL = typer.Option(
    None, "--embedder-model", help="The index's embedding model directory if it moved."
)


def ask(
    index: Path = typer.Argument(..., help="An index directory (hwkit index build)."),
    question: str = typer.Argument(..., help="The question."),
    model: str = MODEL,
    mode: str = MODE,
    k: int = K,
    candidates: int = CANDIDATES,
    reflect: bool = REFLECT,
    max_rounds: int = ROUNDS,
    grader: str = GRADER,
    rerank_model: str | None = RERANK,
    support: str = SUPPORT,
    cot: bool = COT,
    max_tokens: int = MAX_TOKENS,
    confidence: float = CONFIDENCE,
    runtime: str | None = RUNTIME,
    device: str | None = DEVICE,
    embedder_model: str | None = EMBEDDER_MODEL,
    json_output: bool = typer.Option(False, "--json", help="The answer and its trace as JSON."),
) -> None:
    """Answer a question from an index, with citations (passage ids and text) and a trace."""
    pipeline = _pipeline(dict(locals()))
    try:
        answer = pipeline.ask(question)
    finally:
        pipeline.generator.close()
    if json_output:
        typer.echo(json.dumps(answer.to_dict(), indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(f"[bold]{escape(answer.answer) or '(empty answer)'}[/bold]")
    if answer.retrieved and not answer.cited:
        console.print("[yellow]the answer cites no passage[/yellow]")
    if answer.invalid_citations:
        console.print(f"[yellow]cites passages that were not given: {answer.invalid_citations}")
    for c in answer.citations:
        console.print(f"[{c.number}] {escape(c.id)} {escape(c.title)}: {escape(c.text[:200])}")
    if answer.retrieved:
        status = "supported" if answer.supported else "not supported by its citations"
        utility = f", utility {answer.utility}/5" if answer.utility is not None else ""
        console.print(f"({status}{utility}; {answer.seconds:.1f} s)")


def evaluate(
    index: Path = typer.Argument(..., help="An index over the QA set's corpus."),
    data: Path = typer.Option(
        ..., "--data", help="BEIR-format QA directory (queries.jsonl with 'answers')."
    ),
    split: str = typer.Option("test", "--split", help="qrels split to score."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="First N questions only."),
    model: str = MODEL,
    mode: str = MODE,
    k: int = K,
    candidates: int = CANDIDATES,
    reflect: bool = REFLECT,
    max_rounds: int = ROUNDS,
    grader: str = GRADER,
    rerank_model: str | None = RERANK,
    support: str = SUPPORT,
    cot: bool = COT,
    max_tokens: int = MAX_TOKENS,
    confidence: float = CONFIDENCE,
    runtime: str | None = RUNTIME,
    device: str | None = DEVICE,
    embedder_model: str | None = EMBEDDER_MODEL,
    answers_out: Path | None = typer.Option(
        None, "--answers", help="Write every answer with its scores and trace (JSONL)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Score answers on a QA set: EM, F1, citation precision, support, latency, recall."""
    options = dict(locals())
    from hwkit.atomic import write_jsonl_atomic
    from hwkit.plugins.rag.evaluation import evaluate_rag, read_qa

    items = read_qa(data, split, limit)
    if not items:
        raise UsageError(f"{data}: no questions in split {split!r}")
    pipeline = _pipeline(options)
    settings = pipeline.settings
    records: list[dict[str, Any]] = []
    try:
        summary = evaluate_rag(
            pipeline,
            items,
            on_answer=lambda answer, score: records.append({**score, **answer.to_dict()}),
        )
    finally:
        pipeline.generator.close()
    if answers_out is not None:
        write_jsonl_atomic(answers_out, records)
    summary["settings"] = {"model": model, **settings.__dict__}
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"rag eval: {summary['questions']} questions of {data} ({split})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("em", "f1", "cited_rate", "citation_precision", "supported_rate"):
        value = summary[key]
        table.add_row(key, "-" if value is None else f"{value:.3f}")
    for key, value in summary.get("retrieval", {}).items():
        table.add_row(key, f"{value:.3f}")
    table.add_row("latency p50 / p95", "{p50:.0f} / {p95:.0f} ms".format(**summary["latency_ms"]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    rag_app.command("ask")(ask)
    rag_app.command("eval")(evaluate)
    from hwkit.plugins.rag.reader_data import register_reader_data

    register_reader_data(rag_app)
    app.add_typer(rag_app, name="rag")
