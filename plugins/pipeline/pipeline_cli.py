"""``hwkit pipeline run|status``: one job from a data source to a deployed model, with gates.

Exit codes: 0 succeeded (or skipped by ``--if-new-rows``, or nothing left to run); 9 a
gate failed (nothing deployed, the champion stays); 10 the deployed candidate failed
verification and was rolled back; 7 the data is not ready; the usual hwkit codes otherwise
(3 a bad pipeline file, 4 not found, 6 a target or database unreachable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

pipeline_app = typer.Typer(
    help="Pipelines: data -> train -> evaluate -> gates -> export -> deploy -> verify.",
    no_args_is_help=True,
)

KEY_METRICS = (
    "rows_in",
    "rows_rejected",
    "steps",
    "eval_loss",
    "json_valid_rate",
    "pearson",
    "spearman",
    "positives_mean",
    "latency_p95_s",
    "version",
    "champion",
)


def run(
    pipeline: Path = typer.Argument(..., help="The pipeline file (TOML)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default runs/NAME-DATE; an existing one resumes)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Resume RUN (default: the newest runs/NAME-*)."
    ),
    registry: Path | None = typer.Option(
        None,
        "--registry",
        help="Registry directory (default: $HWKIT_REGISTRY_DIR or ~/.local/share/hwkit/registry).",
    ),
    if_new_rows: int | None = typer.Option(
        None,
        "--if-new-rows",
        min=1,
        help="Run only when the source has N more rows than at the last judged run.",
    ),
) -> None:
    """Run a pipeline file: data, validate, train, evaluate, gate, export, register, deploy,
    verify, promote (or roll back)."""
    from hwkit.plugins.pipeline.runner import run_pipeline

    run_pipeline(
        pipeline, out, resume=resume, registry=registry, if_new_rows=if_new_rows, echo=typer.echo
    )


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def status_data(run: Path) -> dict[str, Any]:
    """state.json with the gate outcomes and the deployment, as ``status --json`` prints."""
    from hwkit.plugins.pipeline.runner import read_state

    state = read_state(run)
    return {
        "run": str(run.absolute()),
        "state": state,
        "gate": _read(run / "gate" / "gate.json"),
        "verify_gate": _read(run / "verify" / "gate.json"),
        "deployment": _read(run / "deploy" / "deployment.json"),
        "rollback": _read(run / "verify" / "rollback.json"),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _gate_line(name: str, gate: dict[str, Any] | None) -> str | None:
    if not gate:
        return None
    if gate.get("passed"):
        return f"{name}: passed ({len(gate.get('checks', []))} checks)"
    return f"{name}: FAILED: {'; '.join(gate.get('failures', []))}"


def status(
    run: Path = typer.Argument(..., help="A pipeline run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Stages with status, duration and key metrics; the gate outcome; the deployment."""
    data = status_data(run)
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    state = data["state"]
    table = Table(title=f"pipeline {state.get('name')}: {data['run']}")
    for column in ("stage", "status", "seconds", "metrics", "summary"):
        table.add_column(column)
    for stage, record in state["stages"].items():
        metrics = record.get("metrics") or {}
        shown = ", ".join(f"{k} {_fmt(metrics[k])}" for k in KEY_METRICS if k in metrics)
        summary = record.get("summary") or record.get("error") or ""
        table.add_row(stage, record.get("status", "?"), _fmt(record.get("seconds")), shown, summary)
    console = Console()
    console.print(table)
    lines = [
        _gate_line("gate", data["gate"]),
        _gate_line("verify gate", data["verify_gate"]),
    ]
    deployment = data["deployment"]
    if deployment:
        lines.append(
            f"deployment: v{deployment['version']} on {deployment['target']}: "
            f"{deployment['model']} at {deployment['endpoint']}"
        )
    rollback = data["rollback"]
    if rollback:
        restored = rollback.get("restored")
        back = "nothing" if not restored else f"v{restored['version']}"
        lines.append(f"rolled back to {back}: {rollback.get('reason')}")
    outcome = state.get("outcome", "?")
    error = state.get("error")
    where = f" at {state.get('failed_stage')}: {error}" if error else ""
    lines.append(f"outcome: {outcome}{where}")
    for line in lines:
        if line:
            console.print(line, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    pipeline_app.command("run")(run)
    pipeline_app.command("status")(status)
    app.add_typer(pipeline_app, name="pipeline")
