"""``hwkit quickstart``: the whole path on embedded defaults, in a few minutes on a laptop CPU.

Detect hardware, plan, prepare the bundled persona sample through the SQLite source,
LoRA-train SmolLM2-135M-Instruct, evaluate on held-out questions and print the model's
answers before and after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from hwkit import rundir
from hwkit.errors import UsageError

# Short rows, batch 4, 10 steps: 1 min 53 s on 2 idle CPU cores (docs/performance.md).
QUICKSTART_STEPS = 10
QUICKSTART_SEQ_LEN = 160
QUICKSTART_BATCH = 4


def quickstart(
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Run directory."),
    max_steps: int = typer.Option(QUICKSTART_STEPS, "--max-steps", min=1, help="Optimizer steps."),
    samples: int = typer.Option(3, "--samples", min=0, help="Held-out questions to answer."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    fresh: bool = typer.Option(True, "--fresh/--keep", help="Start over if OUT holds a run."),
) -> None:
    """Detect, plan, prepare the persona sample, LoRA-train SmolLM2, evaluate, compare."""
    from rich.console import Console

    from hwkit.jobs import train
    from hwkit.plan import Plan
    from hwkit.plugins.trainers.cli import print_eval
    from hwkit.plugins.trainers.config import EvalSettings, SFTConfig
    from hwkit.plugins.trainers.evaluate import evaluate_run
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin, persona_data
    from hwkit.runtime import current

    console = Console(stderr=True)
    runtime = current()
    active = runtime.active_profile
    devices = ", ".join(f"{d.id} {d.name}" for d in runtime.devices()) or "none"
    console.print(
        f"[bold]1/4 hardware[/]: {devices}; profile {active.profile.name} ({active.reason})"
    )
    out = out.absolute()
    if fresh and out.exists():
        # Only ever delete a folder hwkit wrote: never a directory the user mistyped.
        if any(out.iterdir()) and not (out / rundir.PLAN).is_file():
            raise UsageError(
                f"--out {out} exists and is not an hwkit run directory",
                hint="choose a new or empty folder",
            )
        shutil.rmtree(out)
    config = SFTConfig(
        output_dir=out,
        data=persona_data(),
        max_seq_len=QUICKSTART_SEQ_LEN,
        effective_batch=QUICKSTART_BATCH,
        max_steps=max_steps,
        learning_rate=3e-4,
        save_steps=max(1, max_steps // 2),
        eval=EvalSettings(samples=samples, max_new_tokens=max_new_tokens, max_rows=16),
    )
    console.print("[bold]2/4 plan + data + train[/]: SmolLM2-135M-Instruct, LoRA, persona sample")
    result = train(SFTTrainerPlugin(), config, runtime=runtime, resume=not fresh and out.exists())
    plan = Plan.model_validate_json((result.output_dir / rundir.PLAN).read_text(encoding="utf-8"))
    console.print(
        f"    plan: {plan.device} {plan.dtype}, micro-batch {plan.micro_batch} x "
        f"{plan.grad_accum} accumulation, checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}, estimated peak "
        f"{plan.estimate.total / 1e9:.2f} GB of {plan.budget / 1e9:.2f} GB"
    )
    console.print(
        f"    trained {result.steps} step{'s' if result.steps != 1 else ''}; "
        f"run directory {result.output_dir} (plan.json says why)"
    )
    console.print("[bold]3/4 evaluate[/]: held-out loss, before/after answers")
    evaluation = evaluate_run(result.output_dir, samples=samples, max_new_tokens=max_new_tokens)
    console.print("[bold]4/4 results[/]")
    print_eval(evaluation)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
