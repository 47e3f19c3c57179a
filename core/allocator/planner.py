"""plan(): choose device, dtype, quantisation, micro-batch and checkpointing that fit.

The search prefers, in order: no quantisation, no gradient checkpointing, the largest
micro-batch (a power of two dividing the effective batch). It moves down that order only
when needed, so every choice has a reason, and it refuses with the nearest plan that would
fit when nothing does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from hwkit.allocator import policy
from hwkit.allocator.budget import Budget, device_budget, gb, reserved_for
from hwkit.allocator.job import LORA_KINDS, Job, Quantization
from hwkit.allocator.memory import Settings, estimate, generation_peak, kv_cache_bytes
from hwkit.allocator.spec import ModelSpec, shipped_names
from hwkit.allocator.targets import Target, resolve_targets
from hwkit.errors import NoFitError, UnknownNameError
from hwkit.hardware_profile import HardwareProfile
from hwkit.log import get_logger
from hwkit.plan import MemoryEstimate, Plan

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.runtime import Runtime

log = get_logger("hwkit.allocator")

__all__ = ["Target", "candidates", "plan", "plan_on", "resolve_targets"]


def plan(
    job: Job,
    devices: list[Device] | None = None,
    runtime: Runtime | None = None,
    *,
    reserved: int | Mapping[str, int] | None = None,
    profile: str | HardwareProfile | None = None,
) -> Plan:
    """The best plan for ``job``; raises NoFitError naming the nearest plan that fits.

    ``devices`` defaults to the runtime's (or the active profile's hardware when
    ``HWKIT_PROFILE`` names hardware that is absent); ``reserved`` is bytes already planned
    per device id (another job sharing it); ``profile`` plans for that profile.
    """
    ranked = candidates(job, devices, runtime, reserved=reserved, profile=profile)
    return ranked[0]


def candidates(
    job: Job,
    devices: list[Device] | None = None,
    runtime: Runtime | None = None,
    *,
    reserved: int | Mapping[str, int] | None = None,
    profile: str | HardwareProfile | None = None,
) -> list[Plan]:
    """A fitting plan per device that can take the job, best first."""
    targets = resolve_targets(devices, runtime, profile)
    fitting: list[tuple[float, Plan]] = []
    refusals: list[str] = []
    for target in targets:
        outcome = plan_on(job, target, reserved_for(target.device.id, reserved))
        if isinstance(outcome, Plan):
            fitting.append((_score(outcome, target.profile), outcome))
        else:
            refusals.append(outcome)
    if not fitting:
        raise _no_fit(job, targets, refusals, reserved)
    fitting.sort(key=lambda pair: (pair[0], pair[1].headroom), reverse=True)
    plans = [p for _, p in fitting]
    if len(plans) > 1:
        order = ", ".join(f"{p.device} ({s:g})" for s, p in fitting)
        plans[0].reasons["device"] += (
            f"; ranked first by throughput score (TFLOPS x settings penalty): {order}"
        )
    for refusal in refusals:
        plans[0].reasons["device"] += f"; {refusal}"
    best = plans[0]
    log.debug(
        "plan",
        job=job.kind,
        model=job.model.name,
        device=best.device,
        profile=best.profile,
        present=best.present,
        dtype=best.dtype,
        quantization=best.quantization,
        micro_batch=best.micro_batch,
        grad_accum=best.grad_accum,
        gradient_checkpointing=best.gradient_checkpointing,
        estimate=best.estimate.total,
        budget=best.budget,
    )
    return plans


# -- one device ---------------------------------------------------------------------------
def _micro_batches(job: Job) -> list[int]:
    if job.micro_batch is not None:
        return [job.micro_batch]
    sizes, size = [], 1
    while size <= job.effective_batch:
        if job.effective_batch % size == 0:
            sizes.append(size)
        size *= 2
    return sorted(sizes, reverse=True)


def _generation_batches(job: Job, group: int, micro_batch: int) -> list[int]:
    """GRPO: completions sampled together, largest first; whole groups, whole micro-batches,
    and a divisor of the effective batch so a sampling round never straddles two steps."""
    step = math.lcm(group, micro_batch)
    return [
        g
        for g in range(job.effective_batch, 0, -1)
        if g % step == 0 and not job.effective_batch % g
    ]


def _largest_fit(job: Job, base: Settings, budget: int) -> tuple[Settings, int] | None:
    """Largest micro-batch that fits ``budget`` under ``base``; with its estimate total.
    GRPO also tries group sizes (largest first, where the job leaves it open) and, under
    each micro-batch, fewer completions sampled together."""
    if job.kind == "grpo":
        for group in job.group_sizes():
            for mb in _micro_batches(job):
                for gen in _generation_batches(job, group, mb):
                    settings = dataclasses.replace(
                        base, micro_batch=mb, group_size=group, generation_batch=gen
                    )
                    total = estimate(job, settings).total
                    if total <= budget:
                        return settings, total
        return None
    for mb in _micro_batches(job):
        settings = dataclasses.replace(base, micro_batch=mb)
        total = estimate(job, settings).total
        if total <= budget:
            return settings, total
    return None


def plan_on(job: Job, target: Target, reserved: int = 0) -> Plan | str:
    """The plan for ``job`` on one device, or a one-line reason it cannot take it."""
    device, profile = target.device, target.profile
    budget = device_budget(device, profile, reserved)
    if job.trains and not device.capabilities.can_train:
        return f"{device.id} ({profile.name}) runs inference only; it cannot train"
    runtime, runtime_reason = policy.choose_runtime(job, target)
    if job.kind in policy.INFERENCE_KINDS and runtime is None:
        return runtime_reason
    dtype, dtype_reason = policy.choose_dtype(job, target)
    attention, attention_reason = policy.attention(job, target, dtype)
    inference = job.kind in policy.INFERENCE_KINDS
    if inference:
        quants, quant_note = policy.inference_weights(job, target, runtime)
    else:
        quants, quant_note = policy.quant_options(job, target)
    if not quants:
        return f"{device.id}: {quant_note}"
    traits = profile.memory.traits()
    if job.gradient_checkpointing is None:
        gc_options = [False, True]
    else:
        gc_options = [job.gradient_checkpointing]

    for quant in quants:
        found: dict[bool, tuple[Settings, int]] = {}
        for gc in gc_options:
            base = Settings(dtype, quant, 1, gc, attention, traits)
            fit = _largest_fit(job, base, budget.bytes)
            if fit is not None:
                found[gc] = fit
        if not found:
            continue
        settings, gc_reason = policy.pick_checkpointing(job, found)
        reasons = {
            "dtype": dtype_reason,
            "attention": attention_reason,
            "quantization": (
                policy.inference_quant_reason(quant, quants, quant_note, job)
                if inference
                else policy.quant_reason(quant, job, quant_note)
            ),
            "gradient_checkpointing": gc_reason,
        }
        if runtime is not None:
            reasons["runtime"] = runtime_reason
        return _make_plan(job, target, budget, settings, reasons=reasons, runtime=runtime)
    return (
        f"{device.id} ({profile.name}): needs {gb(_minimum_need(job, target, quants[-1]))} "
        f"at micro-batch 1, budget {gb(budget.bytes)}"
    )


def _make_plan(
    job: Job,
    target: Target,
    budget: Budget,
    settings: Settings,
    reasons: dict[str, str],
    runtime: str | None = None,
) -> Plan:
    est = estimate(job, settings)
    mb = settings.micro_batch
    accum = job.effective_batch // mb
    profile = target.profile
    if job.micro_batch is not None:
        mb_reason = f"{mb} as requested"
    else:
        mb_reason = (
            f"largest power of two dividing {job.effective_batch} that fits: "
            f"{gb(est.total)} of {gb(budget.bytes)}"
        )
    seq_reason = f"{job.seq_len} (model limit {job.model.max_positions})"
    if job.trains and job.seq_len > profile.training.max_seq_len:
        seq_reason += f"; above profile {profile.name}'s usual {profile.training.max_seq_len}"
    if job.kind in policy.INFERENCE_KINDS:
        return _inference_plan(job, target, budget, settings, reasons, runtime, mb_reason)
    where = (
        "present" if target.present else "NOT present here: planning for hardware you do not have"
    )
    reasons = {
        "device": f"{target.device.id} {target.device.name} (profile {profile.name}, {where})",
        **reasons,
        "micro_batch": mb_reason,
        "grad_accum": f"{accum} = effective batch {job.effective_batch} / micro-batch {mb}",
        "max_seq_len": seq_reason,
        "budget": budget.reason,
        **(
            {
                "lora_rank": f"{job.lora_rank} on q, k, v, o and MLP projections: "
                f"{job.model.lora_params(job.lora_rank) / 1e6:.1f}M trainable parameters"
            }
            if job.lora_rank
            else {}
        ),
        **(_grpo_reasons(job, settings, est) if job.kind == "grpo" else {}),
        "estimate": f"peak {gb(est.total)}, headroom {gb(budget.bytes - est.total)}",
    }
    return Plan(
        job=job.kind,
        model=job.model.name,
        device=target.device.id,
        device_name=target.device.name,
        profile=profile.name,
        present=target.present,
        dtype=settings.dtype,
        quantization=settings.quantization,
        attention=settings.attention,
        runtime=runtime,
        micro_batch=mb,
        grad_accum=accum,
        gradient_checkpointing=settings.gradient_checkpointing,
        max_seq_len=job.seq_len,
        lora_rank=job.lora_rank,
        **(
            {
                "group_size": settings.group_size,
                "generation_batch": settings.generation_batch,
                "completion_len": job.completion_len,
            }
            if job.kind == "grpo"
            else {}
        ),
        estimate=est,
        budget=budget.bytes,
        reasons=reasons,
    )


def _grpo_reasons(job: Job, settings: Settings, est: MemoryEstimate) -> dict[str, str]:
    """Why the group and the sampling batch are what they are, and what sampling costs."""
    group, gen = settings.group_size, settings.generation_batch
    sizes = job.group_sizes()
    if job.group_size is not None:
        group_reason = f"{group} as requested"
    elif group == sizes[0]:
        group_reason = f"{group}: the largest of {', '.join(map(str, sizes))} that fits"
    else:
        group_reason = f"{group}: {', '.join(str(g) for g in sizes if g > group)} do not fit"
    most = _generation_batches(job, group, settings.micro_batch)[0]
    prompts = gen // group
    gen_reason = (
        f"{gen} completions sampled together "
        f"({prompts} prompt{'s' if prompts != 1 else ''} x {group})"
    )
    gen_reason += (
        ", the whole step's"
        if gen == most
        else f"; {most} (the whole step) do not fit: sampled in {job.effective_batch // gen} rounds"
    )
    peak = generation_peak(job, settings)
    kv = kv_cache_bytes(job.model, job.seq_len, gen, settings.dtype)
    return {
        "group_size": group_reason,
        "generation_batch": gen_reason,
        "completion_len": (
            f"{job.completion_len} new tokens at most; sampling peaks at {gb(peak)} over the "
            f"weights (KV cache {gb(kv)} at {job.seq_len} tokens), "
            + (
                f"{gb(est.kv_cache)} above the backward peak"
                if est.kv_cache
                else "below the backward peak"
            )
        ),
    }


def _inference_plan(
    job: Job,
    target: Target,
    budget: Budget,
    settings: Settings,
    reasons: dict[str, str],
    runtime: str | None,
    batch_reason: str,
) -> Plan:
    """A plan for serving: concurrent sequences instead of micro-batch x accumulation, the
    context per sequence, and the KV cache each sequence holds."""
    est = estimate(job, settings)
    mb = settings.micro_batch
    spec = job.model
    what = {"generate": "sequences decoded together", "embed": "texts encoded together"}.get(
        job.kind, "query-passage pairs scored together"
    )
    where = (
        "present" if target.present else "NOT present here: planning for hardware you do not have"
    )
    reasons = {
        "device": f"{target.device.id} {target.device.name} (profile {target.profile.name}, "
        f"{where})",
        **{k: v for k, v in reasons.items() if k != "gradient_checkpointing"},
        "micro_batch": f"{mb} {what}: {batch_reason}",
        "max_seq_len": (
            f"{job.seq_len} tokens per sequence, prompt and reply "
            f"(model limit {spec.max_positions})"
        ),
        "budget": budget.reason,
    }
    if job.kind == "generate":
        per_seq = kv_cache_bytes(spec, job.seq_len, 1, settings.dtype)
        reasons["kv_cache"] = (
            f"{gb(per_seq)} per sequence = 2 x {spec.num_layers} layers x "
            f"{spec.num_kv_heads} KV heads x {spec.head_dim} head dim x {job.seq_len} tokens "
            f"x {per_seq // (2 * spec.num_layers * spec.kv_dim * job.seq_len)} bytes; "
            f"{gb(est.kv_cache)} for {mb}"
        )
    reasons["estimate"] = f"peak {gb(est.total)}, headroom {gb(budget.bytes - est.total)}"
    return Plan(
        job=job.kind,
        model=spec.name,
        device=target.device.id,
        device_name=target.device.name,
        profile=target.profile.name,
        present=target.present,
        dtype=settings.dtype,
        quantization=settings.quantization,
        attention=settings.attention,
        runtime=runtime,
        micro_batch=mb,
        grad_accum=1,
        gradient_checkpointing=False,
        max_seq_len=job.seq_len,
        estimate=est,
        budget=budget.bytes,
        reasons=reasons,
    )


def _minimum_need(job: Job, target: Target, quant: str) -> int:
    dtype, _ = policy.choose_dtype(job, target)
    attention, _ = policy.attention(job, target, dtype)
    gc = job.trains if job.gradient_checkpointing is None else job.gradient_checkpointing
    mb = min(_micro_batches(job))
    traits = target.profile.memory.traits()
    settings = Settings(dtype, quant, mb, gc, attention, traits)
    if job.kind == "grpo":  # the fewest completions sampled together: one smallest group
        group = min(job.group_sizes(), default=2)
        settings = dataclasses.replace(
            settings, group_size=group, generation_batch=math.lcm(group, mb)
        )
    return estimate(job, settings).total


def _score(p: Plan, profile: HardwareProfile) -> float:
    """Throughput-ish score: the profile's peak figure for the dtype, penalised for
    checkpointing and 4-bit dequantisation. CPUs and unknown hardware score 1."""
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[p.dtype]
    figures = {t.metric: t.value for t in profile.throughput}
    value = next((v for m, v in figures.items() if m.startswith(short)), None)
    if value is None:
        value = max(figures.values(), default=1.0)
    # 4-bit training dequantises every matmul; weight-only formats speed up decoding instead
    quantised = p.quantization != "none" and p.job not in policy.INFERENCE_KINDS
    penalty = (0.75 if p.gradient_checkpointing else 1.0) * (0.7 if quantised else 1.0)
    return round(value * penalty, 3)


# -- refusals -----------------------------------------------------------------------------
def _no_fit(
    job: Job,
    targets: list[Target],
    refusals: list[str],
    reserved: int | Mapping[str, int] | None,
) -> NoFitError:
    what = (
        f"{job.model.name} {job.kind} at seq-len {job.seq_len}, "
        f"effective batch {job.effective_batch}"
    )
    nearest: list[tuple[str, Plan]] = []
    for label, variant in _variants(job):
        for target in targets:
            outcome = plan_on(variant, target, reserved_for(target.device.id, reserved))
            if isinstance(outcome, Plan):
                nearest.append((label, outcome))
                break
        if nearest:
            break
    detail = "; ".join(refusals) if refusals else "no device to plan on"
    no_runtime = job.kind in policy.INFERENCE_KINDS and all(
        policy.choose_runtime(job, t)[0] is None for t in targets
    )
    if no_runtime and targets:
        hint = (
            "convert the model into a format one of the device's runtimes loads "
            "(hwkit export --help), or plan on another device"
        )
    elif nearest:
        label, near = nearest[0]
        hint = f"nearest plan that fits: {label} on {near.device} ({gb(near.estimate.total)})"
    else:
        hint = "nothing smaller fits either: use a device with more memory"
    verb = "cannot run here" if no_runtime and targets else "does not fit"
    err = NoFitError(f"{what} {verb}: {detail}", hint=hint)
    err.nearest = nearest[0][1] if nearest else None
    return err


def _variants(job: Job) -> Iterator[tuple[str, Job]]:
    """Nearby jobs, nearest first: 4-bit, shorter sequences, LoRA for full, smaller models."""
    if job.micro_batch is not None and job.micro_batch > 1:
        yield "micro-batch 1", dataclasses.replace(job, micro_batch=1)
    if job.gradient_checkpointing is False and job.trains:
        yield "gradient checkpointing on", dataclasses.replace(job, gradient_checkpointing=True)
    inference = job.kind in policy.INFERENCE_KINDS
    if inference and job.effective_batch > 1:
        job = dataclasses.replace(job, effective_batch=1, micro_batch=None)
        yield "one sequence at a time", job
    quants: list[tuple[str, Quantization]] = [("", job.quantization)]
    if inference and job.model.stored is None and job.quantization in ("auto", "none"):
        quants += [(f"--quantization {q}", q) for q in ("int8", "nf4", "int4")]
    elif job.quantization == "none" and job.kind in LORA_KINDS:
        quants.append(("--quantization nf4", "nf4"))
    seq = job.seq_len if job.kind != "grpo" else 0  # grpo's knob is the completion length
    while seq >= 64:
        for quant_label, quant in quants:
            if seq == job.seq_len and quant == job.quantization:
                continue
            seq_label = f"--seq-len {seq}" if seq != job.seq_len else ""
            label = " ".join(x for x in (quant_label, seq_label) if x)
            yield label, dataclasses.replace(job, seq_len=seq, quantization=quant)
        seq //= 2
    if job.kind == "grpo":
        smallest = min(job.group_sizes(), default=2)
        for group in (g for g in (4, 2) if g < smallest and not job.effective_batch % g):
            yield f"num_generations {group}", dataclasses.replace(job, group_size=group)
        completion = job.completion_len // 2
        while completion >= 32:
            prompt = job.seq_len - job.completion_len
            yield (
                f"max_completion_length {completion}",
                dataclasses.replace(job, completion_len=completion, seq_len=prompt + completion),
            )
            completion //= 2
    if job.kind == "full":
        yield (
            "LoRA (sft) instead of full fine-tuning",
            dataclasses.replace(job, kind="sft", lora_rank=8),
        )
    smaller = sorted(
        (s for s in _shipped_specs() if s.encoder == job.model.encoder),
        key=lambda s: s.param_count,
        reverse=True,
    )
    for spec in smaller:
        if spec.param_count < job.model.param_count and job.seq_len <= spec.max_positions:
            try:
                yield f"--model {spec.name}", dataclasses.replace(job, model=spec)
            except UnknownNameError:  # pragma: no cover - shipped names resolve
                continue


@functools.cache
def _shipped_specs() -> tuple[ModelSpec, ...]:
    seen: dict[str, ModelSpec] = {}
    for path in sorted(set(shipped_names().values())):
        name = path.stem.split("--", 1)[-1]
        seen[name] = ModelSpec.from_config_file(path, name=name)
    return tuple(seen.values())
