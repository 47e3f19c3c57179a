"""The pipeline file: one TOML file from a data source to a deployed model.

```toml
name = "profile-scorer"          # the registry's model name
[data]                           # a DataConfig (docs/data.md), as a trainer's [data]
[augment]                        # hwkit data augment's settings, on the train rows (optional)
[train]                          # trainer = "sft" and its config fields (optional)
[evaluate]                       # task = "json-score" on the train run's held-out rows
[[gate]]                         # MetricThreshold rows on evaluate's metrics, eval_loss
[export]                         # format = "gguf", quantization = "q4_k_m"
[deploy]                         # target = "ollama", [deploy.options]
[verify]                         # the same cases through the deployed endpoint
[[verify.gate]]
```

Everything is checked when the file is loaded, before any stage runs: an unknown table or
field, a trainer or target that is not registered, a target option it refuses, a gate on
a metric no stage produces. Each is a one-line :class:`~hwkit.errors.ConfigError` naming
the file and the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwkit.errors import ConfigError, HwkitError, UnknownNameError, UsageError
from hwkit.plugins.data import DataConfig
from hwkit.plugins.data.augment import AugmentSettings
from hwkit.plugins.pipeline.gates import MetricThreshold, parse_gates
from hwkit.plugins.pipeline.registry import check_name
from hwkit.tomlfile import read_toml

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

# The stages in the order they run; a stage whose table is absent is left out.
STAGES = (
    "data",
    "validate",
    "augment",
    "train",
    "evaluate",
    "gate",
    "export",
    "register",
    "deploy",
    "verify",
    "promote",
)
TABLES = ("name", "data", "augment", "train", "evaluate", "gate", "export", "deploy", "verify")
HINT = "see docs/pipeline.md (Running a pipeline) for the pipeline file"

# What the json-score task measures (scoring.py); positives_* only with a positives filter.
TASK_METRICS = (
    "cases",
    "json_valid_rate",
    "json_scored",
    "pearson",
    "spearman",
    "latency_p50_s",
    "latency_p95_s",
)
POSITIVE_METRICS = ("positives", "positives_scored", "positives_mean", "positives_min")
# What the train stage records that [[gate]] may also name (the loss on the held-out rows
# after training); registered with evaluate's, so change bounds compare with the champion's.
TRAIN_METRICS = ("eval_loss",)


class Positives(BaseModel):
    """Cases whose *reference* has ``field`` within [min, max]: known positives (e.g. known
    researcher profiles) whose predicted scores must stay high."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field("score", min_length=1)
    min: float | None = Field(None, allow_inf_nan=False)
    max: float | None = Field(None, allow_inf_nan=False)


class EvaluateConfig(BaseModel):
    """``[evaluate]``: generate for each held-out case (the train run's validation rows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["json-score"] = "json-score"
    field: str = Field("score", min_length=1, description="the JSON key holding the score")
    positives: Positives | None = None
    limit: int | None = Field(None, ge=1, description="at most this many cases")
    max_new_tokens: int = Field(128, ge=1)
    context: int = Field(2048, ge=64, description="prompt plus reply tokens planned for")

    def metric_names(self) -> tuple[str, ...]:
        return TASK_METRICS + (POSITIVE_METRICS if self.positives is not None else ())


class ExportConfig(BaseModel):
    """``[export]``: a verified GGUF and the Modelfile beside it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["gguf"] = "gguf"
    quantization: Literal["f16", "q8_0", "q4_k_m"] = "q4_k_m"
    verify: bool = True
    system: str | None = None
    temperature: float | None = Field(None, ge=0)
    num_ctx: int | None = Field(None, ge=1)
    template_family: str | None = None


class DeployConfig(BaseModel):
    """``[deploy]``: a registered deploy target and its options table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


class VerifyConfig(BaseModel):
    """``[verify]``: the held-out cases through the deployed OpenAI-compatible endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int | None = Field(None, ge=1, description="default: [evaluate]'s limit")
    max_new_tokens: int | None = Field(None, ge=1, description="default: [evaluate]'s")
    timeout_s: float = Field(120.0, gt=0, description="per request")
    gate: list[MetricThreshold] = Field(default_factory=list)


class PipelineConfig(BaseModel):
    """A loaded pipeline file; ``train`` holds the trainer's fields as validated by its
    own config model (``trainer`` is the registered trainer's name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    data: DataConfig
    augment: AugmentSettings | None = None  # ``hwkit data augment``'s own settings
    trainer: str = "sft"
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateConfig | None = None
    gate: list[MetricThreshold] = Field(default_factory=list)
    export: ExportConfig | None = None
    deploy: DeployConfig | None = None
    verify: VerifyConfig | None = None
    path: Path | None = None  # where it was read from

    def stages(self) -> list[str]:
        """The stages this file runs, in order."""
        present = {
            "augment": self.augment is not None,
            "evaluate": self.evaluate is not None,
            "gate": self.evaluate is not None,
            "export": self.export is not None,
            "deploy": self.deploy is not None,
            "verify": self.verify is not None,
        }
        return [s for s in STAGES if present.get(s, True)]

    def section(self, stage: str) -> Any:
        """The part of the file a stage's work depends on (its fingerprint's input)."""
        dump = self.model_dump(mode="json", exclude={"path"})
        return {
            "data": dump["data"],
            "validate": dump["data"]["thresholds"],
            "augment": dump["augment"],
            "train": {"trainer": dump["trainer"], **dump["train"]},
            "evaluate": dump["evaluate"],
            "gate": dump["gate"],
            "export": dump["export"],
            "register": dump["name"],
            "deploy": dump["deploy"],
            "verify": dump["verify"],
            "promote": None,
        }[stage]

    def fingerprints(self) -> dict[str, str]:
        """Per stage, a hash of its section and every earlier stage's: a change to ``[train]``
        makes train and everything after it run again on resume, not the data stage."""
        out: dict[str, str] = {}
        previous = ""
        for stage in self.stages():
            text = json.dumps([previous, stage, self.section(stage)], sort_keys=True)
            previous = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            out[stage] = previous
        return out


def _first_error(exc: ValidationError, where: str, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden" and len(loc) == 1 and not prefix:
        return ConfigError(
            f"{where}: unknown stage table or field {loc[0]!r}{more}",
            hint=f"known: {', '.join(TABLES)}",
        )
    field = prefix + ".".join(loc) or "(top level)"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{where}: field {field!r}: {msg}{shown}{more}", hint=HINT)


def _gate_rows(value: Any, where: str) -> list[MetricThreshold]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected [[...]] rows (an array of tables), got {value!r}")
    return parse_gates(value, where)


def _resolve_source(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A relative file source resolves against the pipeline file's folder."""
    source = data.get("source")
    if not isinstance(source, str) or "://" in source:
        return data
    bare = source[3:] if source.startswith("hf:") else source
    if Path(bare).is_absolute():
        return data
    resolved = str((base / bare).resolve())
    return {**data, "source": ("hf:" + resolved) if source.startswith("hf:") else resolved}


def _train_fields(
    table: dict[str, Any], where: str, base: Path, runtime: Runtime | None
) -> tuple[str, dict[str, Any]]:
    """(trainer name, its fields) checked against the trainer's config model; output_dir
    and data are the pipeline's."""
    from hwkit.plugins.trainers.config import validate_config

    fields = dict(table)
    trainer = fields.pop("trainer", "sft")
    if not isinstance(trainer, str):
        raise ConfigError(f"{where}: field 'train.trainer': expected a name, got {trainer!r}")
    fields.pop("output_dir", None)  # the pipeline's run directory holds the run
    if "data" in fields:
        raise ConfigError(
            f"{where}: field 'train.data': the pipeline's [data] table is the training data",
            hint="move it to [data]",
        )
    rt = runtime
    if rt is None:
        from hwkit.runtime import current

        rt = current()
    try:
        trainer_cls = rt.plugins.trainers.get(trainer)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: field 'train.trainer': {exc.one_line()}") from None
    model = trainer_cls.config_model
    if "data" not in model.model_fields:
        raise ConfigError(
            f"{where}: field 'train.trainer': the {trainer} trainer takes no [data] table",
            hint="the pipeline trains chat models: trainer = 'sft'",
        )
    name = fields.get("model")
    if isinstance(name, str) and name.startswith(".") and (base / name).exists():
        fields["model"] = str((base / name).resolve())
    try:
        validate_config(model, fields, where=f"{where} [train]")
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=HINT) from None
    return trainer, fields


def _augment_fields(table: Any, where: str, base: Path) -> dict[str, Any]:
    """``[augment]``: the fields of :class:`AugmentSettings` (``hwkit data augment``'s
    options), checked by name here and by type when the file is validated."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [augment] must be a table, got {table!r}", hint=HINT)
    known = [f.name for f in dataclasses.fields(AugmentSettings)]
    unknown = [key for key in table if key not in known]
    if unknown:
        raise ConfigError(
            f"{where}: field 'augment.{unknown[0]}': unknown [augment] field",
            hint=f"known: {', '.join(known)}",
        )
    fields = dict(table)
    name = fields.get("model")
    if isinstance(name, str) and name.startswith(".") and (base / name).exists():
        fields["model"] = str((base / name).resolve())
    return fields


def _check_augment(cfg: PipelineConfig, where: str) -> None:
    """The ranges ``hwkit data augment`` checks, named as the file's fields."""
    if cfg.augment is None:
        return
    if cfg.data.kind != "sft":
        raise ConfigError(
            f"{where}: [augment] makes chat (SFT) rows; [data] kind is {cfg.data.kind!r}",
            hint="remove [augment] or use kind = 'sft'",
        )
    try:
        cfg.augment.validate()
    except UsageError as exc:  # "--min-coherence 1.5 is outside [0, 1]"
        flag, _, rest = exc.message.partition(" ")
        name = flag.removeprefix("--").rstrip(":").replace("-", "_")
        raise ConfigError(f"{where}: field 'augment.{name}': {rest}", hint=exc.hint) from None


def _check_deploy(deploy: DeployConfig, where: str, runtime: Runtime | None) -> None:
    """The target is registered and takes these options (building one reaches no network)."""
    rt = runtime
    if rt is None:
        from hwkit.runtime import current

        rt = current()
    try:
        cls = rt.plugins.deploy_targets.get(deploy.target)
    except UnknownNameError as exc:
        raise ConfigError(f"{where}: field 'deploy.target': {exc.one_line()}") from None
    try:
        cls(**deploy.options)
    except HwkitError as exc:
        raise ConfigError(f"{where}: [deploy.options]: {exc.one_line()}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: [deploy.options]: {exc}") from None


def _check_metrics(cfg: PipelineConfig, where: str) -> None:
    """Every gate names a metric a stage produces; stages that need another are present."""
    if cfg.gate and cfg.evaluate is None:
        raise ConfigError(
            f"{where}: [[gate]] on {cfg.gate[0].metric!r}: no [evaluate] table produces metrics",
            hint='add [evaluate] task = "json-score"',
        )
    task = cfg.evaluate.metric_names() if cfg.evaluate is not None else ()
    rows = [("gate", g, task + TRAIN_METRICS) for g in cfg.gate]
    rows += [("verify.gate", g, task) for g in (cfg.verify.gate if cfg.verify else [])]
    for table, gate, known in rows:
        if gate.metric not in known:
            extra = ""
            if gate.metric in POSITIVE_METRICS:
                extra = " (positives_* need a positives filter in [evaluate])"
            raise ConfigError(
                f"{where}: [[{table}]] on {gate.metric!r}: no stage produces that metric{extra}",
                hint=f"metrics: {', '.join(known)}",
            )
    if cfg.deploy is not None and cfg.export is None:
        raise ConfigError(
            f"{where}: [deploy] needs [export]: a target serves the exported GGUF",
            hint='add [export] format = "gguf"',
        )
    if cfg.verify is not None and (cfg.deploy is None or cfg.evaluate is None):
        missing = "[deploy]" if cfg.deploy is None else "[evaluate]"
        raise ConfigError(
            f"{where}: [verify] needs {missing}",
            hint="verify sends evaluate's cases to the deployed endpoint",
        )


def parse_pipeline(
    doc: dict[str, Any], where: str, *, base: Path, runtime: Runtime | None = None
) -> PipelineConfig:
    """A pipeline from a parsed TOML document (``where`` names it in errors)."""
    doc = dict(doc)
    if "data" not in doc:
        raise ConfigError(f"{where}: no [data] table", hint="[data] source = 'rows.jsonl'")
    if not isinstance(doc.get("name"), str):
        raise ConfigError(f"{where}: field 'name': the registry's model name is required")
    try:
        check_name(doc["name"])
    except HwkitError as exc:
        raise ConfigError(f"{where}: field 'name': {exc.one_line()}") from None
    if isinstance(doc["data"], dict):
        doc["data"] = _resolve_source(doc["data"], base)
        try:
            DataConfig.model_validate(doc["data"])
        except ValidationError as exc:
            raise _first_error(exc, where, prefix="data.") from None
    doc["gate"] = _gate_rows(doc.get("gate"), f"{where}: [[gate]]")
    verify = doc.get("verify")
    if isinstance(verify, dict):
        doc["verify"] = {
            **verify,
            "gate": _gate_rows(verify.get("gate"), f"{where}: [[verify.gate]]"),
        }
    train = doc.pop("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{where}: [train] must be a table, got {train!r}")
    doc["trainer"], doc["train"] = _train_fields(train, where, base, runtime)
    if "augment" in doc:
        doc["augment"] = _augment_fields(doc["augment"], where, base)
    try:
        cfg = PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        raise _first_error(exc, where) from None
    _check_augment(cfg, where)
    _check_metrics(cfg, where)
    if cfg.deploy is not None:
        _check_deploy(cfg.deploy, where, runtime)
    return cfg


def load_pipeline(path: Path, *, runtime: Runtime | None = None) -> PipelineConfig:
    """Read and check a pipeline file; relative sources resolve against its folder."""
    path = Path(path)
    doc = read_toml(path, "pipeline file")
    cfg = parse_pipeline(doc, str(path), base=path.resolve().parent, runtime=runtime)
    return cfg.model_copy(update={"path": path.resolve()})
