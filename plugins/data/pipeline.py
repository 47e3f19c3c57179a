"""The data pipeline: read -> map -> filter -> dedupe -> split -> readiness report.

Every row read is either kept (in train or validation) or rejected with a reason, so
``report.rows_in == report.rows_kept + report.rows_rejected`` always holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit.atomic import write_jsonl_atomic, write_text_atomic
from hwkit.errors import ConfigError
from hwkit.log import get_logger
from hwkit.plugins.data import dedupe as dedupe_mod
from hwkit.plugins.data import preference, sft
from hwkit.plugins.data.columns import Columns
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.example import Example
from hwkit.plugins.data.readiness import ReadinessReport, build_report
from hwkit.plugins.data.records import Ledger, RawRecord, position
from hwkit.plugins.data.sources import load
from hwkit.plugins.data.split import split
from hwkit.rejects import write_rejects

log = get_logger(__name__)


@dataclass
class PreparedData:
    """Train and validation rows in trl's conversational format, the report and the rejects."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    report: ReadinessReport
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rejects_path: Path | None = None

    def as_datasets(self) -> tuple[Any, Any]:
        """(train, validation) as ``datasets.Dataset`` for trl; validation None when empty."""
        from datasets import Dataset

        val = Dataset.from_list(self.validation) if self.validation else None
        return Dataset.from_list(self.train), val

    def write(self, out_dir: Path) -> dict[str, Path]:
        """train.jsonl, validation.jsonl, rejects.jsonl and report.json, each written
        atomically."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "train": write_jsonl_atomic(out_dir / "train.jsonl", self.train),
            "validation": write_jsonl_atomic(out_dir / "validation.jsonl", self.validation),
            "rejects": write_jsonl_atomic(out_dir / "rejects.jsonl", self.rejects),
            "report": write_text_atomic(
                out_dir / "report.json",
                json.dumps(self.report.to_json_dict(), indent=2, ensure_ascii=False) + "\n",
            ),
        }
        self.rejects_path = paths["rejects"]
        return paths


def _confidence_filter(
    examples: list[Example], cfg: DataConfig, column: str, ledger: Ledger
) -> list[Example]:
    assert cfg.min_confidence is not None
    out = []
    for ex in examples:
        raw: Any = ex.sources[0].data.get(column)  # float() raises on None: caught below
        try:
            value = float(raw)
        except (TypeError, ValueError):
            for rec in ex.sources:
                ledger.note(rec, "bad_confidence", f"{column} {raw!r} is not a number")
            continue
        if value < cfg.min_confidence:
            for rec in ex.sources:
                ledger.note(
                    rec,
                    "low_confidence",
                    f"{column} {value:g} < min_confidence {cfg.min_confidence:g}",
                )
            continue
        out.append(ex)
    return out


def prepare(cfg: DataConfig, rejects_path: Path | None = None) -> PreparedData:
    """Run the pipeline; with ``rejects_path`` the rejects are also written there (JSONL)."""
    loaded = load(cfg)
    cols = Columns(loaded.columns(), cfg.mapping, loaded.name)
    if cfg.mapping.keep and cfg.kind != "sft":
        raise ConfigError(
            f"{loaded.name}: mapping.keep applies to sft rows (prompts whose rewards read "
            "source columns), not to preference pairs",
            hint='remove mapping.keep or set kind = "sft"',
        )
    ledger = Ledger()
    records: list[RawRecord] = loaded.records
    examples: list[Example]
    if not records:
        examples = []
    elif cfg.kind == "sft":
        examples = sft.build_all(records, sft.resolve(cfg, cols), cfg, ledger)
    else:
        examples = preference.build_all(records, preference.resolve(cfg, cols), cfg, ledger)
    if cfg.min_confidence is not None and records:
        column = cols.require("confidence", "confidence (min_confidence is set)")
        examples = _confidence_filter(examples, cfg, column, ledger)
    if cfg.dedupe == "exact":
        examples = dedupe_mod.exact(examples, ledger)
    elif cfg.dedupe == "near":
        examples = dedupe_mod.near(examples, ledger, cfg.near_threshold)
    train, validation = split(examples, cfg.validation_fraction, cfg.seed)
    used = {id(rec) for ex in examples for rec in ex.sources}
    rejects = loaded.rejects
    kept = ledger.settle(records, used, rejects)
    rejects.items.sort(key=position)
    report = build_report(
        source=loaded.name,
        kind=cfg.kind,
        rows_in=loaded.rows_in,
        rows_kept=kept,
        rejected_by_reason=rejects.by_reason(),
        train=train,
        validation=validation,
        thresholds=cfg.thresholds,
    )
    if report.rows_in != report.rows_kept + report.rows_rejected:  # a bug, never bad input
        raise RuntimeError(
            f"data pipeline lost rows: {report.rows_in} in, {kept} kept, "
            f"{report.rows_rejected} rejected"
        )
    reject_rows = [r.to_dict() for r in rejects.items]
    data = PreparedData(
        [ex.row for ex in train], [ex.row for ex in validation], report, reject_rows
    )
    if rejects_path is not None:
        write_rejects(rejects_path, rejects.items)
        data.rejects_path = rejects_path
    log.info(
        "data.prepared",
        source=loaded.name,
        rows=report.rows_in,
        kept=kept,
        rejected=report.rows_rejected,
        train=report.train,
        validation=report.validation,
        ready=report.ready,
    )
    return data
