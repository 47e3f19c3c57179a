"""``hwkit plan``: what the allocator would run a job with here (or on a named profile), and why.

Reads only the model's config.json; no torch import, so it answers in well under a second.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import typer

if TYPE_CHECKING:
    from hwkit.allocator.job import Quantization
    from hwkit.plan import JobKind, Plan

KINDS = (
    "sft",
    "dpo",
    "grpo",
    "full",
    "embed",
    "generate",
    "rerank",
    "embedder-train",
    "cross-encoder-train",
)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def _plan_dict(p: Plan) -> dict[str, Any]:
    data = p.model_dump()
    data["estimate"] = {**p.estimate.parts(), "total": p.estimate.total}
    data["effective_batch"] = p.effective_batch
    data["headroom"] = p.headroom
    return data


def _render(p: Plan) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    where = "present" if p.present else "NOT PRESENT: planning for hardware you do not have"
    table = Table(title=f"hwkit plan: {p.job} {p.model} on {p.device} ({p.profile}, {where})")
    table.add_column("choice", style="bold")
    table.add_column("value")
    table.add_column("reason", overflow="fold")
    r = p.reasons
    if p.runtime is not None:  # an inference plan
        rows: list[tuple[str, str, str]] = [
            ("device", f"{p.device} {p.device_name}", r.get("device", "")),
            ("runtime", p.runtime, r.get("runtime", "")),
            ("dtype", p.dtype, r.get("dtype", "")),
            ("weights", p.quantization, r.get("quantization", "")),
            ("attention", p.attention, r.get("attention", "")),
            ("batch", str(p.micro_batch), r.get("micro_batch", "")),
            ("context", str(p.max_seq_len), r.get("max_seq_len", "")),
            *([("KV cache", _gb(p.estimate.kv_cache), r["kv_cache"])] if "kv_cache" in r else []),
            ("budget", _gb(p.budget), r.get("budget", "")),
            ("estimated peak", _gb(p.estimate.total), r.get("estimate", "")),
        ]
    else:
        rows = _training_rows(p)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    parts = Table(title="estimated peak by part")
    parts.add_column("part")
    parts.add_column("bytes", justify="right")
    parts.add_column("share", justify="right")
    total = max(1, p.estimate.total)
    for name, value in p.estimate.parts().items():
        if value:
            parts.add_row(name, _gb(value), f"{value / total:.0%}")
    parts.add_row("total", _gb(p.estimate.total), "100%", style="bold")
    console.print(parts)


def _training_rows(p: Plan) -> list[tuple[str, str, str]]:
    r = p.reasons
    return [
        ("device", f"{p.device} {p.device_name}", r.get("device", "")),
        *([("runtime", p.runtime, r.get("runtime", ""))] if p.runtime else []),
        ("dtype", p.dtype, r.get("dtype", "")),
        ("quantization", p.quantization, r.get("quantization", "")),
        ("attention", p.attention, r.get("attention", "")),
        (
            "micro-batch x accumulation",
            f"{p.micro_batch} x {p.grad_accum} = {p.effective_batch}",
            f"{r.get('micro_batch', '')}; {r.get('grad_accum', '')}",
        ),
        (
            "gradient checkpointing",
            "on" if p.gradient_checkpointing else "off",
            r.get("gradient_checkpointing", ""),
        ),
        ("max sequence length", str(p.max_seq_len), r.get("max_seq_len", "")),
        *(
            [
                ("group size", str(p.group_size), r.get("group_size", "")),
                ("sampled together", str(p.generation_batch), r.get("generation_batch", "")),
                ("completion length", str(p.completion_len), r.get("completion_len", "")),
            ]
            if p.job == "grpo"
            else []
        ),
        ("LoRA rank", "-" if p.lora_rank is None else str(p.lora_rank), r.get("lora_rank", "")),
        ("budget", _gb(p.budget), r.get("budget", "")),
        ("estimated peak", _gb(p.estimate.total), r.get("estimate", "")),
        ("headroom", _gb(p.headroom), ""),
    ]


def plan_command(
    kind: str = typer.Argument(..., help="Job: " + ", ".join(KINDS) + "."),
    model: str = typer.Option(
        ..., "--model", "-m", help="Model directory, config.json, hub id or alias."
    ),
    seq_len: int = typer.Option(512, "--seq-len", help="Tokens per sequence."),
    effective_batch: int = typer.Option(
        16,
        "--effective-batch",
        "--batch",
        help="Examples per optimizer step; for generate, embed and rerank: sequences, texts "
        "or pairs at once.",
    ),
    lora_rank: int = typer.Option(8, "--lora-rank", help="LoRA rank (sft, dpo, grpo)."),
    completion_len: int | None = typer.Option(
        None,
        "--completion-len",
        help="grpo: longest completion in tokens (default: a quarter of --seq-len, which "
        "counts prompt plus completion).",
    ),
    group_size: int | None = typer.Option(
        None, "--group-size", help="grpo: completions per prompt (default: 8, 4 or 2 to fit)."
    ),
    quantization: str = typer.Option(
        "auto", "--quantization", help="auto, none, nf4, int8 or int4 (inference)."
    ),
    runtime_names: list[str] = typer.Option(
        [], "--runtime", help="Inference runtime(s) acceptable, in order (default: the device's)."
    ),
    micro_batch: int | None = typer.Option(None, "--micro-batch", help="Fix the micro-batch."),
    checkpointing: bool | None = typer.Option(
        None,
        "--gradient-checkpointing/--no-gradient-checkpointing",
        help="Force gradient checkpointing on or off (default: only when needed).",
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="Plan for this profile (name or TOML path), present or not."
    ),
    device: str | None = typer.Option(None, "--device", help="Plan on this detected device id."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Plan a job: device, runtime, dtype, weights, batch (x accumulation when training),
    checkpointing, and the memory estimate by part, each with its reason."""
    from hwkit.allocator import Job, ModelSpec, plan
    from hwkit.errors import UsageError
    from hwkit.runtime import current

    if kind not in KINDS:
        raise UsageError(f"job kind {kind!r} unknown", hint="use one of " + ", ".join(KINDS))
    spec = ModelSpec.from_pretrained(model)
    runtime = current()
    if not runtime_names and spec.stored is not None:  # a GGUF or IR runs as stored
        runtime_names = [
            name
            for name, cls in runtime.plugins.runtimes.items()
            if spec.stored.format in cls.formats
        ]
    grpo = kind == "grpo"
    job = Job(
        cast("JobKind", kind),  # checked against KINDS above; Job validates it too
        spec,
        seq_len=seq_len,
        effective_batch=effective_batch,
        lora_rank=lora_rank,
        quantization=cast("Quantization", quantization),  # Job validates it
        gradient_checkpointing=checkpointing,
        micro_batch=micro_batch,
        runtimes=tuple(runtime_names),
        completion_len=(completion_len or max(1, seq_len // 4)) if grpo else 0,
        group_size=group_size if grpo else None,
    )
    devices = [runtime.device(device)] if device else None
    result = plan(job, devices=devices, runtime=runtime, profile=profile)
    if as_json:
        typer.echo(json.dumps(_plan_dict(result), indent=2))
    else:
        _render(result)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
