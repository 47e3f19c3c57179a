"""The pipeline's ``[augment]`` stage: the table is ``hwkit data augment``'s settings, checked
when the file loads; the stage augments the data stage's train rows only and hands train
the original rows plus the kept generations; changing ``[augment]`` re-runs augment and
what follows it, never data.

The real run (module fixture) is six persona rows (four train, two held out), the real
SmolLM2 GGUF on llama.cpp (one core, 32 tokens a turn, two attempts on the first train row)
and the real all-MiniLM-L6-v2 filters. Training itself is replaced by the trainer's own
data preparation (``trainer.prepare`` on the run directory, what a resumed run reads), so
the test sees the rows train would fit on without fitting them; the later runs reuse the
first one's partial file and generate nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hwkit import jobs
from hwkit.errors import ConfigError
from hwkit.models import SMOLLM2
from hwkit.plugins.data.augment import AugmentSettings, partial_path
from hwkit.plugins.data.samples import persona_sample_path
from hwkit.plugins.pipeline import stages
from hwkit.plugins.pipeline.config import load_pipeline
from hwkit.plugins.pipeline.runner import read_state, run_pipeline
from hwkit.plugins.trainers.base import DATA_REPORT
from hwkit.trainer import TrainResult
from tests.plugins.data.test_augment import one_core

MODEL = str(SMOLLM2.gguf_path())
COHERENCE = 0.1

PIPELINE = """
name = "persona-aug"

[data]
source = "rows.jsonl"
validation_fraction = 0.34

[data.thresholds]
min_answers = 1
min_words_per_answer = 0
min_categories = 0
min_total_words = 0

{augment}

[train]
max_steps = 1
max_seq_len = 64
"""

AUGMENT = """[augment]
model = "{model}"
per_row = 2
max_new_tokens = 32
seed = 12
limit = 1
min_coherence = {coherence}
"""


def write_pipeline(folder: Path, name: str = "pipeline.toml", augment: str | None = None) -> Path:
    table = AUGMENT.format(model=MODEL, coherence=COHERENCE) if augment is None else augment
    path = folder / name
    path.write_text(PIPELINE.format(augment=table), encoding="utf-8")
    return path


def persona_rows(n: int) -> list[dict[str, Any]]:
    with persona_sample_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(n), strict=False)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the table -----------------------------------------------------------------------------------
def test_the_table_is_hwkit_data_augments_settings(tmp_path: Path) -> None:
    table = AUGMENT.format(model="./gen.gguf", coherence=0.4) + 'kinds = ["followup"]\n'
    (tmp_path / "gen.gguf").write_bytes(b"")
    cfg = load_pipeline(write_pipeline(tmp_path, augment=table))
    assert cfg.stages()[:4] == ["data", "validate", "augment", "train"]
    assert isinstance(cfg.augment, AugmentSettings)
    assert cfg.augment.kinds == ("followup",) and cfg.augment.per_row == 2
    assert cfg.augment.min_coherence == 0.4 and cfg.augment.limit == 1
    assert cfg.augment.near_duplicate == AugmentSettings().near_duplicate  # the CLI's default
    assert cfg.augment.model == str((tmp_path / "gen.gguf").resolve())  # relative: the file's


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("[augment]\nfactor = 2", ["'augment.factor'", "unknown", "per_row"]),
        ("[augment]\nmin_coherence = 1.5", ["'augment.min_coherence'", "[0, 1]"]),
        ("[augment]\nnear_duplicate = -0.1", ["'augment.near_duplicate'", "[0, 1]"]),
        ("[augment]\nmax_repetition = 2", ["'augment.max_repetition'", "[0, 1]"]),
        ("[augment]\nper_row = 0", ["'augment.per_row'", "at least 1"]),
        ('[augment]\nper_row = "two"', ["'augment.per_row'", "integer"]),
        ('[augment]\nkinds = ["rephrase"]', ["'augment.kinds'", "'rephrase'"]),
        ("[augment]\nlimit = 0", ["'augment.limit'", "at least 1"]),
    ],
)
def test_a_bad_table_is_one_line_naming_the_field(
    tmp_path: Path, table: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_pipeline(tmp_path, augment=table))
    line = info.value.one_line()
    assert "\n" not in line and str(tmp_path / "pipeline.toml") in line
    assert all(w in line for w in words), line


def test_augment_must_be_a_table(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, augment="")
    path.write_text("augment = 3\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"\[augment\] must be a table"):
        load_pipeline(path)


def test_augment_needs_sft_data(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, augment="[augment]\nper_row = 1")
    path.write_text(path.read_text().replace("[data]\n", '[data]\nkind = "preference"\n'))
    with pytest.raises(ConfigError, match="'preference'"):
        load_pipeline(path)


def test_fingerprints_change_from_augment_on_never_before_it(tmp_path: Path) -> None:
    base = load_pipeline(write_pipeline(tmp_path)).fingerprints()
    table = AUGMENT.format(model=MODEL, coherence=0.2)
    other = load_pipeline(write_pipeline(tmp_path, "b.toml", augment=table)).fingerprints()
    without = load_pipeline(write_pipeline(tmp_path, "c.toml", augment="")).fingerprints()
    assert "augment" not in without
    for prints in (other, without):
        assert prints["data"] == base["data"] and prints["validate"] == base["validate"]
        assert prints["train"] != base["train"] and prints["promote"] != base["promote"]
    assert other["augment"] != base["augment"]


def test_a_partial_made_with_other_generation_settings_is_dropped(tmp_path: Path) -> None:
    settings = AugmentSettings(model=MODEL, max_new_tokens=32, seed=12)
    path = tmp_path / "augmented.jsonl.partial"
    path.write_text(json.dumps({"augment_partial": settings.fingerprint()}) + "\n{}\n")
    stages._drop_stale_partial(path, settings.fingerprint())
    assert path.is_file()
    stages._drop_stale_partial(path, AugmentSettings(model=MODEL, seed=13).fingerprint())
    assert not path.exists()


# -- a real run ----------------------------------------------------------------------------------
class Calls:
    """Generators augment loads (counting their calls) and the rows train was handed."""

    def __init__(self) -> None:
        self.generator_calls: list[int] = []
        self.trained: list[list[dict[str, Any]]] = []
        self.lines: list[str] = []


@contextlib.contextmanager
def recording() -> Iterator[Calls]:
    calls = Calls()
    real = jobs.load_generator

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner, self.index = inner, len(calls.generator_calls)
            calls.generator_calls.append(0)

        def generate(self, prompt: Any, params: Any) -> Any:
            calls.generator_calls[self.index] += 1
            return self.inner.generate(prompt, params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    def load(*args: Any, **kwargs: Any) -> Any:
        return Counting(real(*args, **kwargs))

    def train(trainer: Any, config: Any, *, runtime: Any = None, resume: bool = False) -> Any:
        out = Path(config.output_dir)
        data = trainer.prepare(config, out, resume=resume)  # the rows fit() would get
        calls.trained.append(list(data.train))
        return TrainResult(out, steps=0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jobs, "load_generator", load)
        mp.setattr(jobs, "train", train)
        yield calls


def run(path: Path, out: Path, registry: Path) -> tuple[Any, Calls]:
    with recording() as calls, one_core():
        outcome = run_pipeline(path, out, registry=registry, echo=calls.lines.append)
    return outcome, calls


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("pipeline-augment")
    rows = persona_rows(6)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = write_pipeline(folder)
    outcome, calls = run(path, folder / "run", folder / "registry")
    return {"folder": folder, "run": outcome.run, "calls": calls, "outcome": outcome}


def stripped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "provenance"} for r in rows]


@pytest.mark.slow
def test_generated_rows_carry_provenance_and_held_out_rows_are_untouched(
    first: dict[str, Any],
) -> None:
    run_dir: Path = first["run"]
    assert first["outcome"].status == "succeeded"
    report = json.loads((run_dir / "augment" / "report.json").read_text())
    # one generator for one row's two attempts, of two turns each (one when the first fails)
    assert first["calls"].generator_calls == [report["generator_calls"]]
    assert 2 <= report["generator_calls"] <= 4
    train = read_jsonl(run_dir / "data" / "train.jsonl")
    held_out = read_jsonl(run_dir / "data" / "validation.jsonl")
    assert len(train) == 4 and len(held_out) == 2
    made = read_jsonl(run_dir / "augment" / "augmented.jsonl")
    assert made[0]["provenance"] == {"kind": "source", "row": 0}  # limit = 1: the first row
    assert made[0]["messages"] == train[0]["messages"]
    for row in made[1:]:
        prov = row["provenance"]
        assert prov["kind"] in ("followup", "continuation") and prov["source_row"] == 0
        assert prov["model"] == MODEL and isinstance(prov["seed"], int)
        assert prov["coherence"] >= COHERENCE
    rejects = read_jsonl(run_dir / "augment" / "augmented.rejects.jsonl")
    for reject in rejects:
        assert reject["reason"] and reject["record"]["provenance"]["source_row"] == 0
    # the held-out rows are the data stage's, byte for byte, and no generation saw them
    val = run_dir / "train" / "run" / "validation.jsonl"
    assert val.read_bytes() == (run_dir / "data" / "validation.jsonl").read_bytes()
    prompts = {m["content"] for r in held_out for m in r["messages"]}
    for row in made + [r["record"] for r in rejects]:
        assert not prompts & {m["content"] for m in row["messages"]}


@pytest.mark.slow
def test_train_is_handed_the_original_rows_plus_the_kept_ones(first: dict[str, Any]) -> None:
    run_dir: Path = first["run"]
    train = read_jsonl(run_dir / "data" / "train.jsonl")
    kept = read_jsonl(run_dir / "augment" / "augmented.jsonl")[1:]
    handed = read_jsonl(run_dir / "train" / "run" / "train.jsonl")
    assert handed == train + stripped(kept)
    assert first["calls"].trained == [handed]  # what the trainer read from its run directory
    data_report = read_jsonl(run_dir / "train" / "run" / DATA_REPORT)[0]
    assert data_report["augment"]["kept"] == len(kept)


@pytest.mark.slow
def test_the_report_counts_add_up(first: dict[str, Any]) -> None:
    run_dir: Path = first["run"]
    report = json.loads((run_dir / "augment" / "report.json").read_text())
    rejects = read_jsonl(run_dir / "augment" / "augmented.rejects.jsonl")
    kept = read_jsonl(run_dir / "augment" / "augmented.jsonl")[1:]
    assert report["generated"] == 2 == report["kept"] + report["rejected"]
    assert report["kept"] == len(kept) == sum(report["kept_by_kind"].values())
    assert report["rejected"] == len(rejects) == sum(report["rejected_by_reason"].values())
    assert report["train_rows"] == 4 and report["rows_out"] == 4 + report["kept"]
    assert Counter(r["reason"] for r in rejects) == report["rejected_by_reason"]
    state = read_state(run_dir)["stages"]["augment"]
    assert state["metrics"]["kept"] == report["kept"] and state["outputs"]["train"]


@pytest.mark.slow
def test_a_changed_augment_option_reruns_augment_and_train_but_keeps_data(
    first: dict[str, Any], tmp_path: Path
) -> None:
    folder: Path = first["folder"]
    run_dir = tmp_path / "run"
    shutil.copytree(first["run"], run_dir)
    before = read_state(run_dir)["stages"]
    strict = AUGMENT.format(model=MODEL, coherence=0.99)
    outcome, calls = run(
        write_pipeline(folder, "strict.toml", augment=strict), run_dir, tmp_path / "registry"
    )
    assert outcome.status == "succeeded"
    assert (
        "data: done earlier, kept" in calls.lines and "validate: done earlier, kept" in calls.lines
    )
    after = read_state(run_dir)["stages"]
    assert after["data"] == before["data"] and after["validate"] == before["validate"]
    assert after["augment"]["fingerprint"] != before["augment"]["fingerprint"]
    # same generation settings: the partial file is reused, only the filters run again
    assert calls.generator_calls == []
    assert partial_path(run_dir / "augment" / "augmented.jsonl").is_file()
    report = json.loads((run_dir / "augment" / "report.json").read_text())
    assert report["kept"] == 0 and report["reused"] == 2 and report["generator_calls"] == 0
    train = read_jsonl(run_dir / "data" / "train.jsonl")
    assert read_jsonl(run_dir / "train" / "run" / "train.jsonl") == train
    assert calls.trained == [train]

    # unchanged: nothing runs
    outcome, calls = run(folder / "strict.toml", run_dir, tmp_path / "registry")
    assert outcome.status == "complete" and calls.trained == []

    # without [augment]: train on the data stage's rows as before, data still kept
    outcome, calls = run(
        write_pipeline(folder, "plain.toml", augment=""), run_dir, tmp_path / "registry"
    )
    assert "data: done earlier, kept" in calls.lines and calls.trained == [train]
    after = read_state(run_dir)["stages"]
    assert "augment" not in after and after["data"] == before["data"]
    assert (run_dir / "train" / "run" / "train.jsonl").read_bytes() == (
        run_dir / "data" / "train.jsonl"
    ).read_bytes()
