"""``hwkit train NAME CONFIG`` and ``hwkit eval RUN_DIR``.

NAME is any registered trainer (``sft``, ``dpo``, a plugin's own); CONFIG is a TOML file
validated by that trainer's ``config_model``. ``--nproc N`` relaunches the same command
under torchrun (DDP; gloo on CPU). Heavy libraries load inside the commands only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

from hwkit.errors import UsageError


def train(
    name: str = typer.Argument(..., help="Registered trainer: sft, dpo, or a plugin's."),
    config: Path = typer.Argument(..., help="TOML config validated by the trainer's model."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (torchrun DDP)."),
    profile: str | None = typer.Option(None, "--profile", help="Hardware profile name or TOML."),
    out: Path | None = typer.Option(None, "--out", help="Override the config's output_dir."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override max_steps."),
    eval_queries: int | None = typer.Option(
        None, "--eval-queries", help="Override eval_queries (cross-encoder: held-out queries)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train with a registered trainer under the allocator's plan."""
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        _launch(
            name,
            config,
            resume=resume,
            nproc=nproc,
            profile=profile,
            out=out,
            max_steps=max_steps,
            eval_queries=eval_queries,
        )
        return
    from hwkit.jobs import train as run_training
    from hwkit.jobs import world
    from hwkit.plugins.trainers.config import load_config
    from hwkit.runtime import current

    runtime = current().with_profile(profile)
    trainer_cls = runtime.plugins.trainers.get(name)
    overrides: dict[str, Any] = {}
    if out is not None:
        overrides["output_dir"] = str(out)
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if eval_queries is not None:
        overrides["eval_queries"] = eval_queries
    cfg = load_config(trainer_cls.config_model, config, overrides=overrides)
    result = run_training(trainer_cls(), cfg, runtime=runtime, resume=resume)
    if world()[0] != 0:
        return
    summary = {
        "trainer": name,
        "run_dir": str(result.output_dir),
        "steps": result.steps,
        "metrics": result.metrics,
        "artifacts": {k: str(v) for k, v in result.artifacts.items()},
    }
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hwkit train {name}: {result.output_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("optimizer steps", str(result.steps))
    shown = (
        "train_loss",
        "eval_loss",
        "train_runtime",
        "eval_rewards/accuracies",
        "eval_ndcg@10_bm25",  # cross-encoder: BM25 alone on the held-out queries
        "eval_ndcg@10",  # cross-encoder: BM25 -> rerank
        "train_loss_last",
        "train_seconds",
    )
    for key in shown:
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    Console().print(table)


def _launch(
    name: str,
    config: Path,
    *,
    resume: bool,
    nproc: int,
    profile: str | None,
    out: Path | None,
    max_steps: int | None,
    eval_queries: int | None = None,
) -> None:
    """Re-run this command in ``nproc`` processes under torchrun (single node, standalone);
    the options travel on the command line, never through the environment."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "hwkit",
        "train",
        name,
        str(config),
    ]
    if resume:
        cmd.append("--resume")
    if profile:
        cmd += ["--profile", profile]
    if out is not None:
        cmd += ["--out", str(out)]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    if eval_queries is not None:
        cmd += ["--eval-queries", str(eval_queries)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    code = subprocess.call(cmd, env=env)
    if code != 0:
        raise UsageError(f"torchrun exited with status {code}", hint="see the log lines above")


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by hwkit train."),
    samples: int | None = typer.Option(None, "--samples", help="Prompts to generate for."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens"),
    json_output: bool = typer.Option(False, "--json", help="Print eval.json to stdout."),
) -> None:
    """Validation loss and perplexity, before/after samples, JSON validity; writes eval.json."""
    from hwkit.plugins.trainers.evaluate import evaluate_run

    result = evaluate_run(run_dir, samples=samples, max_new_tokens=max_new_tokens)
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print_eval(result)


def print_eval(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"hwkit eval: {result['run_dir']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.get("metrics", {}).items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    for sample in result.get("samples", []):
        console.rule(sample["prompt"][:80])
        if "before" in sample:
            console.print(f"[bold]before:[/] {sample['before']}")
        console.print(f"[bold]after:[/]  {sample['after']}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
