"""The pipeline file is checked whole before anything runs; task scoring; ``--if-new-rows``;
``hwkit pipeline status`` on a recorded run. Fast: nothing is trained here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import ConfigError
from hwkit.plugins.pipeline import scoring, stages
from hwkit.plugins.pipeline.config import EvaluateConfig, Positives, load_pipeline
from hwkit.plugins.pipeline.registry import ModelRegistry
from hwkit.plugins.pipeline.runner import new_rows_check, run_pipeline

runner = CliRunner()

BASE = """
name = "scorer"
[data]
source = "rows.jsonl"
template = "Score {{bio}}"
mapping = {{ target = ["score"] }}
thresholds = {{ min_answers = 1, min_words_per_answer = 0, min_categories = 0 }}
[train]
max_steps = 2
[evaluate]
task = "json-score"
positives = {{ field = "score", min = 0.8 }}
[[gate]]
metric = "pearson"
threshold = 0.5
{extra}
"""


def write(tmp_path: Path, extra: str = "", rows: int = 6) -> Path:
    lines = [json.dumps({"bio": f"bio {i}", "score": i / rows}) for i in range(rows)]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "pipeline.toml"
    path.write_text(BASE.format(extra=extra))
    return path


def refused(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline(write(tmp_path, extra))
    message = info.value.one_line()
    assert "\n" not in message and str(tmp_path / "pipeline.toml") in message
    return message


def test_a_good_file_loads_with_its_stages(tmp_path: Path) -> None:
    cfg = load_pipeline(write(tmp_path, '[export]\nquantization = "q8_0"'))
    assert cfg.stages() == [
        "data",
        "validate",
        "train",
        "evaluate",
        "gate",
        "export",
        "register",
        "promote",
    ]
    assert cfg.data.source == str(tmp_path / "rows.jsonl")  # relative to the file
    assert cfg.trainer == "sft" and cfg.train == {"max_steps": 2}
    assert cfg.evaluate is not None and cfg.evaluate.positives == Positives(min=0.8)


def test_unknown_stage_table(tmp_path: Path) -> None:
    message = refused(tmp_path, '[deploi]\ntarget = "ollama"')
    assert "unknown stage table or field 'deploi'" in message and "known:" in message


def test_gate_on_a_metric_no_stage_produces(tmp_path: Path) -> None:
    message = refused(tmp_path, '[[gate]]\nmetric = "f1"\nthreshold = 0.5')
    assert "[[gate]] on 'f1': no stage produces that metric" in message
    assert "json_valid_rate" in message  # the hint lists what is produced


def test_a_bad_gate_stops_the_run_before_anything_runs(tmp_path: Path) -> None:
    path = write(tmp_path, '[[gate]]\nmetric = "bleu"\nthreshold = 0.5')
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="'bleu'"):
        run_pipeline(path, out, registry=tmp_path / "registry")
    assert not out.exists() and not (tmp_path / "registry").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[verify]\nlimit = 2", "[verify] needs [deploy]"),
        ('[deploy]\ntarget = "ollama"', "[deploy] needs [export]"),
        ("[export]\nquantization = 'q3'", "field 'export.quantization'"),
        ("[verify]\nlimt = 2\n[export]\n[deploy]\ntarget = 'ollama'", "field 'verify.limt'"),
    ],
)
def test_bad_fields_and_missing_stages(tmp_path: Path, extra: str, expected: str) -> None:
    assert expected in refused(tmp_path, extra)


def test_positive_metrics_need_a_positives_filter(tmp_path: Path) -> None:
    path = write(tmp_path, '[[verify.gate]]\nmetric = "positives_min"\nthreshold = 0.5')
    text = path.read_text().replace('positives = { field = "score", min = 0.8 }\n', "")
    path.write_text(
        text.replace(
            "[[verify.gate]]", '[export]\n[deploy]\ntarget = "ollama"\n[verify]\n[[verify.gate]]'
        )
    )
    with pytest.raises(ConfigError, match="positives_\\* need a positives filter"):
        load_pipeline(path)


def test_trainer_fields_are_the_trainers_own(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("max_steps = 2", "max_stepz = 2"))
    with pytest.raises(ConfigError, match="field 'max_stepz'"):
        load_pipeline(path)
    path.write_text(path.read_text().replace("max_stepz = 2", 'trainer = "nope"'))
    with pytest.raises(ConfigError, match=r"field 'train.trainer': unknown trainer 'nope'"):
        load_pipeline(path)


def test_deploy_target_and_options_are_checked(tmp_path: Path) -> None:
    message = refused(tmp_path, '[export]\n[deploy]\ntarget = "kubernetes"')
    assert "field 'deploy.target': unknown deploy target 'kubernetes'" in message
    message = refused(tmp_path, '[export]\n[deploy]\ntarget = "ollama"\noptions = { hots = "x" }')
    assert "[deploy.options]" in message and "hots" in message


def test_a_bad_gate_row_names_the_gate_and_field(tmp_path: Path) -> None:
    message = refused(tmp_path, '[[gate]]\nmetric = "spearman"\ntreshold = 0.5')
    assert "gate 2 ('spearman')" in message and "treshold" in message


def test_fingerprints_change_from_the_changed_stage_on(tmp_path: Path) -> None:
    before = load_pipeline(write(tmp_path)).fingerprints()
    path = tmp_path / "pipeline.toml"
    path.write_text(path.read_text().replace("threshold = 0.5", "threshold = 0.6"))
    after = load_pipeline(path).fingerprints()
    same = [s for s in before if before[s] == after[s]]
    assert same == ["data", "validate", "train", "evaluate"]


def test_json_score_metrics() -> None:
    def sample(after: str, score: float, latency: float) -> dict[str, object]:
        return {"after": after, "reference": json.dumps({"score": score}), "latency_s": latency}

    samples = [
        sample('{"score": 0.9}', 0.95, 1.0),
        sample('answer: {"score": 0.6} done', 0.85, 2.0),
        sample("not json", 0.9, 3.0),
        sample('{"score": 0.1}', 0.05, 4.0),
        sample('{"score": 0.2}', 0.3, 10.0),
    ]
    settings = EvaluateConfig(positives=Positives(field="score", min=0.8))
    metrics = scoring.score(samples, settings)
    assert metrics["cases"] == 5 and metrics["json_valid_rate"] == pytest.approx(0.8)
    assert metrics["positives"] == 3 and metrics["positives_scored"] == 2
    assert metrics["positives_mean"] == pytest.approx((0.9 + 0.6 + 0.0) / 3)
    assert metrics["positives_min"] == 0.0  # the unparsable positive counts as a miss
    assert metrics["pearson"] > 0.9 and metrics["spearman"] == pytest.approx(1.0)
    assert (metrics["latency_p50_s"], metrics["latency_p95_s"]) == (3.0, 10.0)
    assert math.isnan(scoring.gate_values({"pearson": None})["pearson"])
    assert scoring.finite({"a": None, "b": 1, "c": math.nan}) == {"b": 1.0}


def test_cases_are_the_held_out_rows_up_to_their_last_question() -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": '{"score": 1}'},
            ]
        },
        {"messages": [{"role": "user", "content": "no reply"}]},
    ]
    (case,) = scoring.cases_from_rows(rows)
    assert [m["role"] for m in case.messages] == ["system", "user"]
    assert case.reference == '{"score": 1}'


def test_if_new_rows_skips_until_the_source_grew(tmp_path: Path) -> None:
    path = write(tmp_path, rows=45)
    cfg = load_pipeline(path)
    registry = ModelRegistry(tmp_path / "registry")
    assert new_rows_check(cfg, registry, 10) is None  # never judged: run
    artifact = tmp_path / "model.gguf"
    artifact.write_bytes(b"GGUF")
    version = registry.register("scorer", {"gguf": artifact}, tags={"rows": "40"})
    registry.promote("scorer", version.version)
    assert new_rows_check(cfg, registry, 10) == "skipped: 5 new rows < 10"
    assert new_rows_check(cfg, registry, 5) is None
    res = runner.invoke(
        app,
        ["pipeline", "run", str(path), "--if-new-rows", "10", "--registry", str(registry.root)],
    )
    assert res.exit_code == 0 and "skipped: 5 new rows < 10" in res.stdout
    assert not (tmp_path / "runs").exists()
    # a candidate turned down at 44 rows raises the bar
    stages.write_registry_state(registry.root, "scorer", rejected_rows=44)
    assert new_rows_check(cfg, registry, 2) == "skipped: 1 new rows < 2"


def test_status_prints_stages_gate_and_deployment(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "gate").mkdir(parents=True)
    (run / "deploy").mkdir()
    state = {
        "format": 1,
        "name": "scorer",
        "outcome": "failed",
        "failed_stage": "gate",
        "error": "gate failed: pearson 0.3 < 0.5 (threshold)",
        "stages": {
            "data": {"status": "done", "seconds": 0.5, "metrics": {"rows_in": 40}, "summary": "ok"},
            "gate": {"status": "failed", "seconds": 0.01, "error": "gate failed"},
        },
    }
    (run / "state.json").write_text(json.dumps(state))
    gate = {"passed": False, "checks": [{}], "failures": ["pearson 0.3 < 0.5 (threshold)"]}
    (run / "gate" / "gate.json").write_text(json.dumps(gate))
    deployment = {"target": "ollama", "version": 1, "model": "scorer:latest", "endpoint": "u"}
    (run / "deploy" / "deployment.json").write_text(json.dumps(deployment))
    res = runner.invoke(app, ["pipeline", "status", str(run)])
    assert res.exit_code == 0, res.output
    assert "rows_in 40" in res.stdout and "FAILED: pearson 0.3 < 0.5" in res.stdout
    assert "deployment: v1 on ollama: scorer:latest at u" in res.stdout
    assert "outcome: failed at gate" in res.stdout
    res = runner.invoke(app, ["pipeline", "status", str(run), "--json"])
    shown = json.loads(res.stdout)
    assert shown["state"]["stages"]["gate"]["status"] == "failed"
    assert shown["gate"]["passed"] is False and shown["deployment"]["version"] == 1
    res = runner.invoke(app, ["pipeline", "status", str(tmp_path)])
    assert res.exit_code != 0 and "not a pipeline run directory" in str(res.exception)


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in (Path(__file__).parents[3] / "examples" / "pipelines").glob("*.toml")),
)
def test_the_example_pipelines_load(name: str) -> None:
    """Every pipeline file under examples/ is valid as shipped: its source exists and every
    stage, gate and option checks out."""
    path = Path(__file__).parents[3] / "examples" / "pipelines" / name
    cfg = load_pipeline(path)
    if "shared/data" not in cfg.data.source:  # the shared data may live elsewhere
        assert Path(cfg.data.source).is_file(), cfg.data.source
    if name == "persona-augment.toml":
        assert cfg.augment is not None and cfg.augment.runtimes == ("llama.cpp",)
        assert cfg.stages()[:4] == ["data", "validate", "augment", "train"]
    if name == "persona-plain.toml":
        assert cfg.augment is None
