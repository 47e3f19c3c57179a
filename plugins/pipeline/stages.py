"""One function per pipeline stage. Each reads what earlier stages recorded (through the
:class:`Context`), writes its files under ``RUN/<stage>/`` and returns a
:class:`StageResult`: outputs (paths relative to RUN), metrics and a one-line summary.
The runner (runner.py) records them in ``state.json`` and decides what runs.

A stage that stops the pipeline raises a hwkit error: a failed gate is :class:`GateFailed`
(exit code 9), a verification of the deployed model that fails after the deployment was
rolled back is :class:`VerifyFailed` (exit code 10), data below its readiness minimums is
:class:`DataNotReady` (exit code 7, as ``hwkit data check``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit import rundir
from hwkit.atomic import write_json_atomic, write_jsonl_atomic
from hwkit.errors import (
    ConfigError,
    HwkitError,
    NotFoundError,
    UnavailableError,
)
from hwkit.log import get_logger
from hwkit.plugins.pipeline import scoring
from hwkit.plugins.pipeline.gates import GateResult, MetricThreshold, evaluate_gates

if TYPE_CHECKING:
    from hwkit.deploy import Deployment, DeployTarget
    from hwkit.plugins.pipeline.config import PipelineConfig
    from hwkit.plugins.pipeline.registry import ModelRegistry, ModelVersion
    from hwkit.runtime import Runtime

log = get_logger("hwkit.pipeline")

# Exit codes of the pipeline (after hwkit.errors' 0-8; local to this plugin).
EXIT_GATE_FAILED = 9  # a gate failed: nothing was deployed, the champion stays in service
EXIT_ROLLED_BACK = 10  # the deployed candidate failed verification and was rolled back
EXIT_NOT_READY = 7  # hwkit.plugins.data's: the data does not meet its readiness minimums

TRAIN_RUN = "run"  # RUN/train/run: the training run directory
STATE_FILE = "pipeline.json"  # ROOT/<name>/pipeline.json in the registry: rows, deployment


class GateFailed(HwkitError):
    """A candidate's metrics did not clear its gates; the message lists each failed bound."""

    exit_code = EXIT_GATE_FAILED


class VerifyFailed(HwkitError):
    """The deployed candidate failed verification; the previous deployment was restored."""

    exit_code = EXIT_ROLLED_BACK


class DataNotReady(HwkitError):
    exit_code = EXIT_NOT_READY


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)  # role -> path relative to RUN
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class Context:
    """What a stage may use: the file, the run directory, the registry, the runtime and the
    records of the stages before it."""

    config: PipelineConfig
    run: Path
    registry: ModelRegistry
    runtime: Runtime
    records: Mapping[str, Mapping[str, Any]]  # stage -> its state.json record
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # stage -> its inputs' hash
    earlier: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # the last attempt's
    echo: Callable[[str], None] = print

    def dir(self, stage: str) -> Path:
        path = self.run / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: Path) -> str:
        return str(Path(path).absolute().relative_to(self.run.absolute()))

    def output(self, stage: str, role: str) -> Path:
        """An earlier stage's output, as an absolute path."""
        try:
            return self.run / self.records[stage]["outputs"][role]
        except KeyError:
            raise NotFoundError(
                f"{self.run}: the {stage} stage recorded no {role!r} output",
                hint="run the pipeline again without --resume",
            ) from None

    def metrics(self, stage: str) -> dict[str, Any]:
        return dict(self.records.get(stage, {}).get("metrics") or {})

    def info(self, stage: str) -> dict[str, Any]:
        return dict(self.records.get(stage, {}).get("info") or {})

    @property
    def train_run(self) -> Path:
        return self.output("train", "run")

    def champion(self) -> ModelVersion | None:
        if self.config.name not in self.registry.names():
            return None
        return self.registry.champion(self.config.name)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# -- data, validate, augment -------------------------------------------------------------------
def data(ctx: Context) -> StageResult:
    """Read the source, build chat rows, dedupe and split; every row kept or rejected."""
    from hwkit.plugins.data import prepare
    from hwkit.plugins.data.sources import mask_url

    out = ctx.dir("data")
    prepared = prepare(ctx.config.data)
    paths = prepared.write(out)
    report = prepared.report
    metrics = {
        "rows_in": report.rows_in,
        "rows_kept": report.rows_kept,
        "rows_rejected": report.rows_rejected,
        "train": report.train,
        "validation": report.validation,
    }
    return StageResult(
        outputs={role: ctx.rel(p) for role, p in paths.items()},
        metrics=metrics,
        info={"source": mask_url(ctx.config.data.source)},
        summary=f"{report.rows_in} rows read, {report.rows_kept} kept "
        f"({report.train} train, {report.validation} held out), {report.rows_rejected} rejected",
    )


def validate(ctx: Context) -> StageResult:
    """The readiness minimums of ``[data.thresholds]``; the rejects stay in data/."""
    report = json.loads(ctx.output("data", "report").read_text(encoding="utf-8"))
    out = ctx.dir("validate")
    checks = report.get("checks", [])
    path = write_json_atomic(out / "readiness.json", {"ready": report["ready"], "checks": checks})
    rejects = ctx.output("data", "rejects")
    if not report["ready"]:
        unmet = ", ".join(
            f"{c['name']} {c['value']:g} < {c['minimum']:g}" for c in checks if not c["met"]
        )
        raise DataNotReady(
            f"data not ready: {unmet}",
            hint=f"rejected rows are in {rejects}; lower [data.thresholds] or add rows",
        )
    if ctx.config.evaluate is not None and not report.get("validation"):
        raise ConfigError(
            f"{ctx.config.path}: [evaluate] has no held-out cases: the split kept no "
            "validation rows",
            hint="raise data.validation_fraction",
        )
    return StageResult(
        outputs={"readiness": ctx.rel(path)},
        metrics={"ready": True},
        summary=f"ready ({len(checks)} minimums met; rejects in {ctx.rel(rejects)})",
    )


AUGMENTED = "augmented.jsonl"  # RUN/augment/: the augmented rows, as hwkit data augment writes them
AUGMENT_REPORT_KEYS = ("train_rows", "generated", "kept", "rejected", "rejected_by_reason")


def _drop_stale_partial(path: Path, fingerprint: Mapping[str, Any]) -> None:
    """The partial file of generations is reused only when it was made with the same
    generation settings (a changed threshold filters again without generating); one made
    otherwise is deleted, not refused: the pipeline file changed, so augment starts over."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        first = fh.readline()
    try:
        header = json.loads(first).get("augment_partial")
    except (ValueError, AttributeError):
        header = None
    if header != dict(fingerprint):
        path.unlink()


def augment(ctx: Context) -> StageResult:
    """``hwkit data augment`` on the data stage's train rows only (the held-out rows are
    never augmented or shown to the generator, so evaluation stays honest): follow-ups and
    continuations, kept when coherent with their source answer and not near-duplicates.
    Writes ``augmented.jsonl`` (the rows augmented, then the kept generations, each with its
    provenance), its rejects, ``report.json`` (the counts) and ``train.jsonl``: the data
    stage's train rows as they were plus the kept generations, which train is handed."""
    from hwkit.plugins.data import ColumnMapping, DataConfig
    from hwkit.plugins.data.augment import augment as run_augment
    from hwkit.plugins.data.augment import partial_path, rejects_path

    settings = ctx.config.augment
    assert settings is not None
    out = ctx.dir("augment")
    source = ctx.output("data", "train")
    originals = rundir.read_jsonl(source)
    target = out / AUGMENTED
    _drop_stale_partial(partial_path(target), settings.fingerprint())
    rows_cfg = DataConfig(
        source=str(source),
        mapping=ColumnMapping(messages="messages"),
        dedupe="none",
        validation_fraction=0.0,
    )
    summary = run_augment(rows_cfg, target, settings, runtime=ctx.runtime)
    made = rundir.read_jsonl(target)
    kept = [r for r in made if (r.get("provenance") or {}).get("kind") != "source"]
    rows = originals + [{k: v for k, v in r.items() if k != "provenance"} for r in kept]
    train_path = write_jsonl_atomic(out / rundir.TRAIN_DATA, rows)
    report = {
        "train_rows": len(originals),
        "augmented_rows": summary.rows_in,
        "duplicate_sources": summary.duplicate_sources,
        "generated": summary.attempts,
        "reused": summary.reused,
        "generator_calls": summary.generator_calls,
        "kept": summary.kept,
        "kept_by_kind": summary.kept_by_kind,
        "rejected": summary.rejected,
        "rejected_by_reason": summary.rejected_by_reason,
        "rows_out": len(rows),
        "seconds": summary.seconds,
        "settings": summary.settings,
    }
    report_path = write_json_atomic(out / "report.json", report)
    reasons = ", ".join(f"{k} {v}" for k, v in summary.rejected_by_reason.items())
    return StageResult(
        outputs={
            "augmented": ctx.rel(target),
            "rejects": ctx.rel(rejects_path(target)),
            "report": ctx.rel(report_path),
            "train": ctx.rel(train_path),
        },
        metrics={k: report[k] for k in ("train_rows", "generated", "kept", "rejected", "rows_out")},
        info={"model": settings.model, "rejected_by_reason": summary.rejected_by_reason},
        summary=f"{summary.attempts} generated from {summary.rows_in} train "
        f"row{'' if summary.rows_in == 1 else 's'}, "
        f"{summary.kept} kept, {summary.rejected} rejected"
        + (f" ({reasons})" if reasons else "")
        + f"; train gets {len(rows)} rows ({len(originals)} + {summary.kept})",
    )


# -- train -------------------------------------------------------------------------------------
def interrupted(ctx: Context, stage: str) -> bool:
    """The last attempt stopped inside ``stage`` (killed or failed) with the same inputs."""
    record = ctx.earlier.get(stage) or {}
    same = record.get("fingerprint") == ctx.fingerprints.get(stage)
    return same and record.get("status") in ("started", "failed")


def train(ctx: Context) -> StageResult:
    """Train on the data stage's rows (not a second read of the source), or with
    ``[augment]`` on augment's train rows (the data stage's plus the kept generations; the
    held-out rows are the data stage's either way): they are handed to the trainer the way
    a resumed run reads its own, so a train stage interrupted with the same inputs goes on
    from its last complete checkpoint; otherwise it starts afresh."""
    from hwkit.jobs import train as run_training
    from hwkit.plugins.trainers.base import DATA_REPORT

    cfg = ctx.config
    out = ctx.dir("train") / TRAIN_RUN
    if out.exists() and not interrupted(ctx, "train"):
        shutil.rmtree(out)  # another config's checkpoints must not be resumed
    out.mkdir(parents=True, exist_ok=True)
    rows_from = "data" if cfg.augment is None else "augment"
    shutil.copyfile(ctx.output(rows_from, "train"), out / rundir.TRAIN_DATA)
    shutil.copyfile(ctx.output("data", "validation"), out / rundir.VALIDATION_DATA)
    report = json.loads(ctx.output("data", "report").read_text(encoding="utf-8"))
    if cfg.augment is not None:
        counts = json.loads(ctx.output("augment", "report").read_text(encoding="utf-8"))
        report["augment"] = {k: counts[k] for k in AUGMENT_REPORT_KEYS}
    write_jsonl_atomic(out / DATA_REPORT, [report])
    trainer_cls: Any = ctx.runtime.plugins.trainers.get(cfg.trainer)
    config = trainer_cls.config_model.model_validate(
        {**cfg.train, "output_dir": out, "data": cfg.data}
    )
    result = run_training(trainer_cls(), config, runtime=ctx.runtime, resume=True)
    metrics: dict[str, Any] = {"steps": result.steps}
    losses = {k: v for k, v in result.metrics.items() if "loss" in k}
    metrics.update(scoring.finite(losses))
    # a loss that diverged (NaN, inf) stays, as NaN: a gate on it fails, it is not "missing"
    diverged = [k for k in losses if k not in metrics and scoring.is_number(losses[k])]
    metrics.update(dict.fromkeys(diverged, math.nan))
    loss = metrics.get("eval_loss")
    return StageResult(
        outputs={"run": ctx.rel(out)},
        metrics=metrics,
        info={"trainer": cfg.trainer},
        summary=f"{result.steps} steps" + (f", eval_loss {_fmt(loss)}" if loss else ""),
    )


# -- evaluate and gate ---------------------------------------------------------------------------
def cases(ctx: Context, limit: int | None) -> list[scoring.Case]:
    rows = rundir.read_jsonl(ctx.train_run / rundir.VALIDATION_DATA)
    found = scoring.cases_from_rows(rows, limit)
    if not found:
        raise ConfigError(
            f"{ctx.train_run / rundir.VALIDATION_DATA}: no held-out case ends in a reply",
            hint="raise data.validation_fraction",
        )
    return found


def evaluate(ctx: Context) -> StageResult:
    """Generate for each held-out case with the trained model (greedy) and score the task."""
    from hwkit.inference import GenerationParams
    from hwkit.jobs import load_generator

    settings = ctx.config.evaluate
    assert settings is not None
    todo = cases(ctx, settings.limit)
    generator = load_generator(
        ctx.train_run,
        runtime=ctx.runtime,
        context=settings.context,
        runtimes=("transformers",),
    )
    samples: list[dict[str, Any]] = []
    try:
        params = GenerationParams(max_new_tokens=settings.max_new_tokens)
        for case in todo:
            start = time.perf_counter()
            prompt = generator.prompt(case.messages, settings.max_new_tokens)
            text = generator.generate(prompt, params).text.strip()
            samples.append(_sample(case, text, time.perf_counter() - start))
    finally:
        generator.close()
    metrics = scoring.score(samples, settings)
    out = ctx.dir("evaluate")
    write_jsonl_atomic(out / "samples.jsonl", samples)
    path = write_json_atomic(out / "metrics.json", metrics)
    return StageResult(
        outputs={"samples": ctx.rel(out / "samples.jsonl"), "metrics": ctx.rel(path)},
        metrics=metrics,
        summary=_metric_line(metrics),
    )


def _sample(case: scoring.Case, text: str, seconds: float) -> dict[str, Any]:
    return {
        "prompt": case.messages[-1]["content"],
        "after": text,
        "reference": case.reference,
        "latency_s": round(seconds, 4),
    }


def _metric_line(metrics: Mapping[str, Any]) -> str:
    keys = ("cases", "json_valid_rate", "pearson", "spearman", "positives_mean", "latency_p95_s")
    return ", ".join(f"{k} {_fmt(metrics[k])}" for k in keys if k in metrics)


def _gate_record(
    result: GateResult, metrics: Mapping[str, Any], champion: ModelVersion | None
) -> dict[str, Any]:
    return {
        "passed": result.passed,
        "checks": [asdict(c) for c in result.checks],
        "failures": [c.reason for c in result.failures()],
        "champion": None if champion is None else champion.version,
        "metrics": dict(metrics),
    }


def _check_gates(
    ctx: Context, stage: str, gates: list[MetricThreshold], metrics: Mapping[str, Any]
) -> tuple[GateResult, Path]:
    champion = ctx.champion()
    result = evaluate_gates(
        scoring.gate_values(dict(metrics)), gates, None if champion is None else champion.metrics
    )
    path = write_json_atomic(ctx.dir(stage) / "gate.json", _gate_record(result, metrics, champion))
    return result, path


def _in_service(ctx: Context) -> str:
    champion = ctx.champion()
    return "no champion yet" if champion is None else f"champion v{champion.version} stays"


def candidate_metrics(ctx: Context) -> dict[str, Any]:
    """What ``[[gate]]`` checks and a registered version keeps: evaluate's metrics and the
    train stage's held-out loss (``TRAIN_METRICS``)."""
    from hwkit.plugins.pipeline.config import TRAIN_METRICS

    trained = ctx.metrics("train")
    return {**{k: trained[k] for k in TRAIN_METRICS if k in trained}, **ctx.metrics("evaluate")}


def gate(ctx: Context) -> StageResult:
    """Evaluate's metrics (and train's ``eval_loss``) against ``[[gate]]`` (change bounds
    against the champion's); ``gate/gate.json`` keeps every check, passed or not."""
    metrics = candidate_metrics(ctx)
    result, path = _check_gates(ctx, "gate", ctx.config.gate, metrics)
    if not result.passed:
        raise GateFailed(
            f"gate failed: {'; '.join(c.reason for c in result.failures())}",
            hint=f"nothing deployed, {_in_service(ctx)} in service; every check in {path}",
        )
    skipped = sum(c.skipped for c in result.checks)
    return StageResult(
        outputs={"gate": ctx.rel(path)},
        metrics={"passed": True, "checks": len(result.checks)},
        summary=f"passed {len(result.checks)} checks"
        + (f" ({skipped} skipped: no champion value)" if skipped else ""),
    )


# -- export and register -------------------------------------------------------------------------
def export(ctx: Context) -> StageResult:
    """A verified GGUF and a Modelfile beside it (the ``ollama`` exporter), from the run."""
    settings = ctx.config.export
    assert settings is not None
    out = ctx.dir("export")
    options: dict[str, Any] = {
        "quant": settings.quantization,
        "verify": settings.verify,
        "name": ctx.config.name,
    }
    for key in ("system", "temperature", "num_ctx", "template_family"):
        value = getattr(settings, key)
        if value is not None:
            options[key] = value
    exporter: Any = ctx.runtime.plugins.exporters.get("ollama")
    modelfile = Path(exporter().export(ctx.train_run, out, **options))
    gguf = out / f"{ctx.config.name}-{settings.quantization}.gguf"
    if not gguf.is_file():
        raise NotFoundError(f"the export wrote no {gguf.name} in {out}")
    from hwkit.plugins.exporters.report import read_figures

    figures = read_figures(gguf)
    keys = ("top1_agreement", "file_bytes", "seconds")
    metrics: dict[str, Any] = {k: figures[k] for k in keys if k in figures}
    return StageResult(
        outputs={"gguf": ctx.rel(gguf), "modelfile": ctx.rel(modelfile)},
        metrics=metrics,
        info={"quantization": settings.quantization, "verified": figures.get("verified")},
        summary=f"{gguf.name} ({settings.quantization}, {gguf.stat().st_size / 2**20:.1f} MiB)",
    )


def _slim_run(ctx: Context) -> Path:
    """The run directory without its checkpoints (optimizer state), for the registry."""
    dst = ctx.dir("register") / TRAIN_RUN
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ctx.train_run, dst, ignore=shutil.ignore_patterns(rundir.CHECKPOINTS))
    return dst


def register(ctx: Context) -> StageResult:
    """A new registry version: the GGUF, the Modelfile, the run, evaluate's metrics, the
    source's row count. Idempotent on resume: the version this run registered is reused."""
    from hwkit.plugins.data.sources import mask_url

    cfg, reg = ctx.config, ctx.registry
    run_id = str(ctx.run.absolute())
    candidate = ctx.fingerprints.get("register", "")
    existing = None
    if cfg.name in reg.names():
        existing = next(
            (
                v
                for v in reg.versions(cfg.name)
                if v.tags.get("run") == run_id and v.tags.get("candidate") == candidate
            ),
            None,
        )
    if existing is None:
        artifacts: dict[str, Path] = {"run": _slim_run(ctx)}
        if cfg.export is not None:
            artifacts["gguf"] = ctx.output("export", "gguf")
            artifacts["modelfile"] = ctx.output("export", "modelfile")
        rows = ctx.metrics("data").get("rows_in", 0)
        existing = reg.register(
            cfg.name,
            artifacts,
            metrics=scoring.finite(candidate_metrics(ctx)),
            run=run_id,
            source=mask_url(cfg.data.source),
            tags={"run": run_id, "candidate": candidate, "rows": str(rows)},
        )
        shutil.rmtree(ctx.run / "register" / TRAIN_RUN, ignore_errors=True)
    path = write_json_atomic(ctx.dir("register") / "version.json", existing.to_dict())
    return StageResult(
        outputs={"version": ctx.rel(path)},
        metrics={"version": existing.version},
        info={"path": str(reg.version_dir(cfg.name, existing.version))},
        summary=f"{cfg.name} v{existing.version} in {reg.root}",
    )


def version_number(ctx: Context) -> int:
    return int(ctx.metrics("register")["version"])


# -- deploy, verify, promote ---------------------------------------------------------------------
def target(ctx: Context) -> DeployTarget:
    settings = ctx.config.deploy
    assert settings is not None
    cls: Any = ctx.runtime.plugins.deploy_targets.get(settings.target)
    built: DeployTarget = cls(**settings.options)
    return built


def registry_state(root: Path, name: str) -> dict[str, Any]:
    """``ROOT/<name>/pipeline.json``: what the pipeline runs of ``name`` recorded in the
    registry (``rows`` and ``deployment`` of the last promotion, ``rejected_rows`` of the
    last candidate its gates turned down)."""
    path = root / name / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_registry_state(root: Path, name: str, **values: Any) -> None:
    state = registry_state(root, name)
    state.update(values, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json_atomic(root / name / STATE_FILE, state)


def _previous(ctx: Context, tgt: DeployTarget, recorded: Path) -> Deployment | None:
    """What a rollback must restore: the champion's deployment. Looked for in what this run
    recorded before (a resumed deploy: the target may already serve the candidate), then
    the target's answer, then the deployment the last promoting run recorded; failing
    those, what serves now (made outside hwkit, or nothing)."""
    from hwkit.deploy import Deployment

    champion = ctx.champion()
    want = None if champion is None else champion.version
    earlier: Deployment | None = None
    if recorded.is_file():
        data = json.loads(recorded.read_text(encoding="utf-8"))["previous"]
        earlier = None if data is None else Deployment.from_dict(data)
        if (None if earlier is None else earlier.version) == want:
            return earlier
    now = tgt.current(ctx.config.name)
    if now is not None and now.version == want:
        return now
    last = registry_state(ctx.registry.root, ctx.config.name).get("deployment")
    if isinstance(last, dict) and want is not None:
        promoted = Deployment.from_dict(last)
        if promoted.version == want:
            return promoted
    return earlier if recorded.is_file() else now


def deploy(ctx: Context) -> StageResult:
    """``check()`` first (nothing changes when the target is unreachable), then what serves
    now is written to ``deploy/previous.json`` before the candidate is deployed: a resumed
    run rolls back to that, not to its own candidate."""
    from hwkit.deploy import DeployError

    cfg, reg = ctx.config, ctx.registry
    tgt = target(ctx)
    tgt.check()
    out = ctx.dir("deploy")
    number = version_number(ctx)
    previous_path = out / "previous.json"
    previous = _previous(ctx, tgt, previous_path)
    write_json_atomic(
        previous_path,
        {"candidate": number, "previous": None if previous is None else previous.to_dict()},
    )
    version = reg.get(cfg.name, number)
    artifacts = {role: reg.artifact_path(cfg.name, version, role) for role in version.artifacts}
    try:
        deployment = tgt.deploy(cfg.name, number, artifacts)
    except DeployError:
        _restore(ctx, tgt, previous, "the target refused the deploy", stage="deploy")
        raise
    path = write_json_atomic(out / "deployment.json", deployment.to_dict())
    return StageResult(
        outputs={"deployment": ctx.rel(path), "previous": ctx.rel(previous_path)},
        metrics={"version": number},
        info={"target": deployment.target, "endpoint": deployment.endpoint},
        summary=f"v{number} on {deployment.target}: {deployment.model} at {deployment.endpoint}",
    )


def _restore(
    ctx: Context, tgt: DeployTarget, previous: Deployment | None, why: str, stage: str = "verify"
) -> Deployment | None:
    """Put ``previous`` back; recorded in ``<stage>/rollback.json``."""
    restored = tgt.rollback(ctx.config.name, previous)
    write_json_atomic(
        ctx.dir(stage) / "rollback.json",
        {
            "reason": why,
            "previous": None if previous is None else previous.to_dict(),
            "restored": None if restored is None else restored.to_dict(),
        },
    )
    log.warning(
        "pipeline.rollback",
        name=ctx.config.name,
        reason=why,
        restored=None if restored is None else restored.version,
    )
    return restored


def chat(
    endpoint: str, model: str, messages: list[dict[str, str]], max_tokens: int, timeout: float
) -> str:
    """One greedy OpenAI chat completion (no proxy from the environment)."""
    body = json.dumps(
        {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    ).encode("utf-8")
    request = urllib.request.Request(
        endpoint.rstrip("/") + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
        raise UnavailableError(f"{endpoint}: chat completion failed: {exc}") from None
    try:
        return str(answer["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        raise UnavailableError(f"{endpoint}: not an OpenAI chat completion: {answer!r}") from None


def verify(ctx: Context) -> StageResult:
    """The held-out cases through the deployed endpoint, scored like evaluate and checked
    against ``[[verify.gate]]``; on a failure the previous deployment is put back."""
    from hwkit.deploy import Deployment

    settings, task = ctx.config.verify, ctx.config.evaluate
    assert settings is not None and task is not None
    deployment = Deployment.from_dict(
        json.loads(ctx.output("deploy", "deployment").read_text(encoding="utf-8"))
    )
    recorded = json.loads(ctx.output("deploy", "previous").read_text(encoding="utf-8"))
    previous = None if recorded["previous"] is None else Deployment.from_dict(recorded["previous"])
    tgt = target(ctx)
    back = "nothing" if previous is None else f"v{previous.version}"
    out = ctx.dir("verify")
    try:
        if deployment.endpoint is None:
            raise UnavailableError(f"{deployment.target}: the deployment has no endpoint to verify")
        max_tokens = settings.max_new_tokens or task.max_new_tokens
        samples = []
        for case in cases(ctx, settings.limit or task.limit):
            start = time.perf_counter()
            text = chat(
                deployment.endpoint, deployment.model, case.messages, max_tokens, settings.timeout_s
            )
            samples.append(_sample(case, text.strip(), time.perf_counter() - start))
    except HwkitError as exc:
        _restore(ctx, tgt, previous, f"verification could not run: {exc.one_line()}")
        raise VerifyFailed(
            f"verify: {exc.one_line()}", hint=f"rolled back to {back}; {_in_service(ctx)}"
        ) from None
    metrics = scoring.score(samples, task)
    write_jsonl_atomic(out / "samples.jsonl", samples)
    result, path = _check_gates(ctx, "verify", settings.gate, metrics)
    if not result.passed:
        reasons = "; ".join(c.reason for c in result.failures())
        _restore(ctx, tgt, previous, f"verify gate failed: {reasons}")
        raise VerifyFailed(
            f"verify gate failed: {reasons}",
            hint=f"rolled back to {back}; {_in_service(ctx)}; every check in {path}",
        )
    return StageResult(
        outputs={"samples": ctx.rel(out / "samples.jsonl"), "gate": ctx.rel(path)},
        metrics=metrics,
        info={"gate_checks": len(result.checks)},
        summary=_metric_line(metrics) + f"; passed {len(result.checks)} checks",
    )


def promote(ctx: Context) -> StageResult:
    """The candidate becomes the champion; the registry's pipeline.json records the source's
    row count (for ``--if-new-rows``) and the deployment (for the next run's rollback)."""
    cfg, reg = ctx.config, ctx.registry
    number = version_number(ctx)
    before = ctx.champion()
    was = "none" if before is None else f"v{before.version}"
    if "gate" in ctx.records:  # the champion before this run (a deploy target such as
        # ``serve`` may have made the candidate the champion already)
        gated = json.loads(ctx.output("gate", "gate").read_text(encoding="utf-8"))
        was = "none" if gated.get("champion") is None else f"v{gated['champion']}"
    reg.promote(cfg.name, number, reason=f"pipeline {ctx.run.absolute()}: gates passed")
    deployment = None
    if "deploy" in ctx.records:
        deployment = json.loads(ctx.output("deploy", "deployment").read_text(encoding="utf-8"))
    write_registry_state(
        reg.root,
        cfg.name,
        rows=int(ctx.metrics("data").get("rows_in", 0)),
        version=number,
        deployment=deployment,
        run=str(ctx.run.absolute()),
    )
    path = write_json_atomic(
        ctx.dir("promote") / "promote.json", {"champion": number, "previous": was}
    )
    return StageResult(
        outputs={"promote": ctx.rel(path)},
        metrics={"champion": number},
        summary=f"{cfg.name} v{number} is the champion (was {was})",
    )


STAGE_FUNCTIONS: dict[str, Callable[[Context], StageResult]] = {
    "data": data,
    "validate": validate,
    "augment": augment,
    "train": train,
    "evaluate": evaluate,
    "gate": gate,
    "export": export,
    "register": register,
    "deploy": deploy,
    "verify": verify,
    "promote": promote,
}
