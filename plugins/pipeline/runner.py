"""The pipeline runner: the run directory, its records, resume, and ``--if-new-rows``.

Run directory::

    RUN/pipeline.toml   a copy of the pipeline file as run
    RUN/state.json      stage -> status (started, done, failed), times, outputs, metrics;
                        rewritten atomically when a stage starts and when it ends
    RUN/<stage>/        each stage's files (data/, train/run/, evaluate/, gate/gate.json, ...)

Resume: a stage is skipped when it is recorded ``done``, its fingerprint (a hash of its
part of the pipeline file and of every earlier stage's) is unchanged, and its outputs still
exist; the first stage that does not qualify runs, and every stage after it. A stage killed
half-way is recorded ``started`` and runs again: training goes on from its last complete
checkpoint, registering reuses the version this run registered, deploying is redone
(targets are idempotent) and rolls back to the champion's deployment recorded before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.atomic import write_json_atomic, write_text_atomic
from hwkit.errors import ConfigError, HwkitError, NotFoundError, UsageError
from hwkit.log import get_logger, run_log
from hwkit.plugins.pipeline import stages
from hwkit.plugins.pipeline.config import PipelineConfig, load_pipeline
from hwkit.plugins.pipeline.registry import ModelRegistry

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

log = get_logger("hwkit.pipeline")

FORMAT = 1
STATE = "state.json"
COPY = "pipeline.toml"
LOG = "log.jsonl"
RUNS = Path("runs")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Outcome:
    """How a ``run_pipeline`` call ended (a stopped pipeline raises instead)."""

    status: str  # "succeeded", "complete" (nothing left to run) or "skipped" (--if-new-rows)
    run: Path | None
    message: str
    champion: int | None = None


# -- state.json ---------------------------------------------------------------------------------
def read_state(run: Path) -> dict[str, Any]:
    """A run directory's state.json; one-line errors when it is not one."""
    path = Path(run) / STATE
    if not path.is_file():
        raise NotFoundError(
            f"{run} is not a pipeline run directory (no {STATE})",
            hint="hwkit pipeline run PIPELINE.toml --out RUN",
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path}: not readable: {exc}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise ConfigError(f"{path}: pipeline state format {fmt!r} is not one this hwkit reads")
    doc.setdefault("stages", {})
    return doc


def _outputs_exist(run: Path, record: dict[str, Any]) -> bool:
    return all((run / rel).exists() for rel in (record.get("outputs") or {}).values())


def plan_stages(
    cfg: PipelineConfig, run: Path, records: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """(stages kept from earlier, stages to run), in order."""
    prints = cfg.fingerprints()
    kept: list[str] = []
    for stage in cfg.stages():
        record = records.get(stage) or {}
        if (
            record.get("status") == "done"
            and record.get("fingerprint") == prints[stage]
            and _outputs_exist(run, record)
        ):
            kept.append(stage)
            continue
        break
    return kept, cfg.stages()[len(kept) :]


# -- --if-new-rows ------------------------------------------------------------------------------
def row_baseline(registry: ModelRegistry, name: str) -> int | None:
    """The source's row count when a candidate was last judged: the champion's (its
    ``rows`` tag) or a later one its gates turned down, whichever is larger; None before
    any run got that far."""
    counts: list[int] = []
    if name in registry.names():
        champion = registry.champion(name)
        if champion is not None and champion.tags.get("rows", "").isdigit():
            counts.append(int(champion.tags["rows"]))
    state = stages.registry_state(registry.root, name)
    for key in ("rows", "rejected_rows"):
        if isinstance(state.get(key), int):
            counts.append(int(state[key]))
    return max(counts) if counts else None


def count_rows(cfg: PipelineConfig) -> int:
    """Rows the source holds now (read as the data stage reads them)."""
    from hwkit.plugins.data.sources import load

    return int(load(cfg.data).rows_in)


def new_rows_check(cfg: PipelineConfig, registry: ModelRegistry, minimum: int) -> str | None:
    """A "skipped: ..." line when the source has not grown by ``minimum`` rows since the
    last judged run, else None (run)."""
    baseline = row_baseline(registry, cfg.name)
    if baseline is None:
        return None
    grown = count_rows(cfg) - baseline
    if grown < minimum:
        return f"skipped: {max(grown, 0)} new rows < {minimum}"
    return None


# -- running ------------------------------------------------------------------------------------
def default_out(cfg: PipelineConfig) -> Path:
    return RUNS / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run(cfg: PipelineConfig) -> Path | None:
    """The newest ``runs/<name>-*`` with a state.json (for ``--resume`` without ``--out``)."""
    found = sorted(RUNS.glob(f"{cfg.name}-*/{STATE}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


class _Recorder:
    """state.json, rewritten atomically on every change."""

    def __init__(self, run: Path, doc: dict[str, Any]) -> None:
        self.run, self.doc = run, doc

    @property
    def records(self) -> dict[str, Any]:
        records: dict[str, Any] = self.doc["stages"]
        return records

    def save(self) -> None:
        self.doc["updated"] = _now()
        write_json_atomic(self.run / STATE, self.doc)


def _open_state(run: Path, cfg: PipelineConfig, source: Path, resume: bool) -> _Recorder:
    if (run / STATE).is_file():
        doc = read_state(run)
        if doc.get("name") not in (None, cfg.name):
            raise UsageError(
                f"{run} is a run of {doc.get('name')!r}, not {cfg.name!r}",
                hint="give another --out",
            )
    elif resume:
        raise UsageError(f"--resume: {run} holds no {STATE}", hint="run without --resume")
    else:
        doc = {"format": FORMAT, "name": cfg.name, "created": _now(), "stages": {}}
    doc.update(pipeline=str(source.resolve()), attempts=int(doc.get("attempts", 0)) + 1)
    return _Recorder(run, doc)


def run_pipeline(
    path: Path,
    out: Path | None = None,
    *,
    resume: bool = False,
    registry: Path | None = None,
    if_new_rows: int | None = None,
    runtime: Runtime | None = None,
    echo: Callable[[str], None] = print,
) -> Outcome:
    """Run (or resume) the pipeline of ``path`` in ``out``; a stage that stops it raises
    its hwkit error (a failed gate: :class:`~hwkit.plugins.pipeline.stages.GateFailed`)
    after recording it in state.json."""
    if runtime is None:
        from hwkit.runtime import current

        runtime = current()
    cfg = load_pipeline(path, runtime=runtime)
    reg = ModelRegistry(registry)
    if if_new_rows is not None:
        skipped = new_rows_check(cfg, reg, if_new_rows)
        if skipped is not None:
            echo(skipped)
            return Outcome("skipped", None, skipped)
    if out is None:
        out = latest_run(cfg) if resume else default_out(cfg)
        if out is None:
            raise UsageError(
                f"--resume: no earlier run of {cfg.name} under {RUNS}/", hint="give --out RUN"
            )
    run = Path(out).absolute()
    recorder = _open_state(run, cfg, Path(path), resume)
    kept, todo = plan_stages(cfg, run, recorder.records)
    earlier = {stage: dict(record) for stage, record in recorder.records.items()}
    for stage in list(recorder.records):
        if stage not in kept:
            del recorder.records[stage]  # re-run: earlier figures would mislead
    if not todo:
        msg = f"{run}: every stage is done"
        echo(msg)
        return Outcome("complete", run, msg, _champion(reg, cfg.name))
    ctx = stages.Context(
        config=cfg,
        run=run,
        registry=reg,
        runtime=runtime,
        records=recorder.records,
        fingerprints=cfg.fingerprints(),
        earlier=earlier,
        echo=echo,
    )
    if cfg.deploy is not None and "deploy" in todo:
        stages.target(ctx).check()  # an unreachable target stops the run before it starts
    run.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run / COPY, Path(path).read_text(encoding="utf-8"))
    recorder.doc.update(outcome="running", error=None)
    recorder.save()
    for stage in kept:
        echo(f"{stage}: done earlier, kept")
    with run_log(run / LOG):
        for stage in todo:
            _run_stage(ctx, recorder, stage)
    recorder.doc["outcome"] = "succeeded"
    recorder.save()
    champion = _champion(reg, cfg.name)
    msg = f"{cfg.name}: pipeline succeeded; champion v{champion}" if champion else "succeeded"
    echo(msg)
    return Outcome("succeeded", run, msg, champion)


def _champion(reg: ModelRegistry, name: str) -> int | None:
    if name not in reg.names():
        return None
    champion = reg.champion(name)
    return None if champion is None else champion.version


def _run_stage(ctx: stages.Context, recorder: _Recorder, stage: str) -> None:
    record: dict[str, Any] = {
        "status": "started",
        "started": _now(),
        "fingerprint": ctx.fingerprints[stage],
    }
    recorder.records[stage] = record
    recorder.save()
    log.info("pipeline.stage.start", stage=stage, run=str(ctx.run))
    start = time.perf_counter()
    try:
        result = stages.STAGE_FUNCTIONS[stage](ctx)
    except BaseException as exc:
        error = exc.one_line() if isinstance(exc, HwkitError) else f"{type(exc).__name__}: {exc}"
        record.update(status="failed", finished=_now(), error=error)
        record["seconds"] = round(time.perf_counter() - start, 2)
        interrupted = isinstance(exc, KeyboardInterrupt)
        recorder.doc.update(
            outcome="interrupted" if interrupted else "failed", failed_stage=stage, error=error
        )
        recorder.save()
        if isinstance(exc, stages.GateFailed | stages.VerifyFailed):
            rows = ctx.metrics("data").get("rows_in")
            stages.write_registry_state(
                ctx.registry.root, ctx.config.name, rejected_rows=rows, rejected_run=str(ctx.run)
            )
        log.warning("pipeline.stage.failed", stage=stage, error=error)
        raise
    seconds = round(time.perf_counter() - start, 2)
    record.update(
        status="done",
        finished=_now(),
        seconds=seconds,
        outputs=result.outputs,
        metrics=result.metrics,
        info=result.info,
        summary=result.summary,
    )
    recorder.save()
    log.info("pipeline.stage.done", stage=stage, seconds=seconds)
    ctx.echo(f"{stage}: {result.summary} ({seconds:.1f}s)")
