"""``hwkit data check|prepare`` through the real CLI app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import ConfigError
from hwkit.plugins.data import EXIT_NOT_READY
from hwkit.plugins.data.samples import PERSONA_QUERY, persona_sample_path

runner = CliRunner()


def test_check_ready_sample_prints_the_table() -> None:
    result = runner.invoke(app, ["data", "check", str(persona_sample_path())])
    assert result.exit_code == 0, result.output
    assert "words per answer (mean)" in result.stdout and "ready: 73 answers" in result.stdout


def test_check_not_ready_exits_7_with_json(shared_data: Path, tmp_path: Path) -> None:
    rejects = tmp_path / "rejects.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "check",
            str(shared_data / "sft" / "alpaca_1k.json"),
            "--json",
            "--rejects",
            str(rejects),
        ],
    )
    assert result.exit_code == EXIT_NOT_READY == 7
    report = json.loads(result.stdout)
    assert report["ready"] is False and report["rows_in"] == 1000
    assert [c["name"] for c in report["checks"] if not c["met"]] == ["categories"]
    assert report["rows_in"] == report["rows_kept"] + report["rows_rejected"]
    assert rejects.exists() and report["rejects_path"] == str(rejects)
    relaxed = runner.invoke(
        app, ["data", "check", str(shared_data / "sft" / "alpaca_1k.json"), "--min-categories", "0"]
    )
    assert relaxed.exit_code == 0, relaxed.output


def test_sample_then_prepare_writes_all_files_from_sqlite(tmp_path: Path) -> None:
    sample = runner.invoke(app, ["data", "sample", "--sqlite", str(tmp_path / "p.db"), "--json"])
    assert sample.exit_code == 0, sample.output
    info = json.loads(sample.stdout)
    assert info["jsonl"] == str(persona_sample_path()) and info["query"] == PERSONA_QUERY
    out = tmp_path / "prepared"
    result = runner.invoke(
        app,
        [
            "data",
            "prepare",
            info["sqlite_url"],
            "--query",
            info["query"],
            "--out",
            str(out),
            "--system-prompt",
            "You are Tomas.",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "rejects.jsonl",
        "report.json",
        "train.jsonl",
        "validation.jsonl",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report == {k: v for k, v in json.loads(result.stdout).items() if k != "files"}
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert len(train) == report["train"] and len(val) == report["validation"] > 0
    assert train[0]["messages"][0] == {"role": "system", "content": "You are Tomas."}
    assert (out / "rejects.jsonl").read_text() == ""


def test_toml_config_with_relative_source_and_overrides(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in persona_sample_path().read_text().splitlines()][:12]
    rows.append({"question": "Empty?", "answer": "", "category": "x"})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        '[data]\nsource = "rows.jsonl"\nvalidation_fraction = 0.25\n'
        "[data.thresholds]\nmin_answers = 10\nmin_total_words = 500\n"
    )
    out = tmp_path / "out"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        result = runner.invoke(
            app,
            [
                "data",
                "prepare",
                str(cfg),
                "--out",
                str(out),
                "--min-categories",
                "2",
                "--require-ready",
            ],
        )
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["thresholds"] == {
        "min_answers": 10,
        "min_words_per_answer": 30.0,
        "min_categories": 2,
        "min_total_words": 500,
    }
    assert report["validation"] == 3 and report["rejected_by_reason"] == {"empty_answer": 1}
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert reject["line"] == 13 and reject["reason"] == "empty_answer"


def test_bad_config_field_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\nsource = "x.jsonl"\nvalidation_fraction = "lots"\n')
    result = runner.invoke(app, ["data", "check", str(cfg)])
    assert isinstance(result.exception, ConfigError)
    line = result.exception.one_line()
    assert str(cfg) in line and "data.validation_fraction" in line and "\n" not in line


def test_entry_point_prints_one_line_and_exit_code_for_unreachable_db() -> None:
    env = {**os.environ, "HWKIT_LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hwkit",
            "data",
            "check",
            "postgresql://scorer:hunter2-secret@127.0.0.1:9/profiles",
            "--query",
            "SELECT 1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 6
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach database")
    assert "127.0.0.1" in lines[0] and "profiles" in lines[0]
    assert "hunter2-secret" not in proc.stderr + proc.stdout


def test_check_and_prepare_read_the_shared_options_alike(tmp_path: Path) -> None:
    rows = [
        {"question": f"q {i}?", "answer": " ".join(["word"] * (5 + i)), "category": f"c{i % 2}"}
        for i in range(8)
    ]
    rows.append(dict(rows[0]))  # an exact duplicate, kept when --dedupe none
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    shared = [
        "--template",
        "Q: {question}",
        "--dedupe",
        "none",
        "--min-answers",
        "9",
        "--min-words-per-answer",
        "5",
        "--min-categories",
        "2",
        "--min-total-words",
        "10",
    ]
    check = runner.invoke(app, ["data", "check", str(src), *shared, "--json"])
    assert check.exit_code == 0, check.output
    out = tmp_path / "out"
    prepare = runner.invoke(
        app,
        ["data", "prepare", str(src), "--out", str(out), *shared, "--validation-fraction", "0"],
    )
    assert prepare.exit_code == 0, prepare.output
    checked = json.loads(check.stdout)
    prepared = json.loads((out / "report.json").read_text())
    for report in (checked, prepared):
        assert report["rows_kept"] == 9 and report["ready"] is True
        assert report["thresholds"] == {
            "min_answers": 9,
            "min_words_per_answer": 5.0,
            "min_categories": 2,
            "min_total_words": 10,
        }
    assert checked["validation"] == 1 and prepared["validation"] == 0
    train = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert train[0]["messages"][0] == {"role": "user", "content": "Q: q 0?"}
    # the split options belong to prepare only, as before
    refused = runner.invoke(app, ["data", "check", str(src), "--seed", "1"])
    assert refused.exit_code == 2 and "--seed" in refused.output
