"""Data sources: JSONL/JSON/CSV files, SQLite, local Hugging Face datasets, bad input."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.plugins.data import DataConfig, mask_url, prepare
from hwkit.plugins.data.samples import (
    PERSONA_QUERY,
    persona_sample_path,
    persona_sqlite_path,
    persona_sqlite_url,
)


def _rows() -> list[dict[str, object]]:
    with persona_sample_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_persona_sample_is_ready_and_labelled_synthetic() -> None:
    rows = _rows()
    assert 60 <= len(rows) <= 120
    assert {"question", "answer", "category"} <= set(rows[0])
    data = prepare(DataConfig(source=str(persona_sample_path())))
    assert data.report.ready, data.report.summary()
    assert data.report.rows_in == len(rows)
    readme = (persona_sample_path().parent / "README.md").read_text()
    assert "SYNTHETIC" in readme


def test_malformed_jsonl_lines_are_rejected_with_line_numbers(tmp_path: Path) -> None:
    good = [json.dumps({"question": f"q{i}?", "answer": f"answer number {i}"}) for i in range(4)]
    lines = [
        good[0],
        '{"question": "broken", "answer": ',
        good[1],
        "",
        "[1, 2]",
        good[2],
        "not json at all",
        good[3],
    ]
    src = _write_jsonl(tmp_path / "rows.jsonl", lines)
    rejects = tmp_path / "run" / "rejects.jsonl"
    data = prepare(DataConfig(source=str(src), validation_fraction=0), rejects_path=rejects)
    assert len(data.train) == 4
    assert data.report.rows_in == 7  # the blank line is not a row
    written = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in written] == [
        (2, "malformed_json"),
        (5, "not_an_object"),
        (7, "malformed_json"),
    ]
    assert written[0]["record"] == '{"question": "broken", "answer": '
    assert written[0]["source"] == str(src)
    assert data.rejects_path == rejects


def test_json_array_and_real_alpaca_file(shared_data: Path) -> None:
    data = prepare(DataConfig(source=str(shared_data / "sft" / "alpaca_1k.json"), dedupe="none"))
    assert data.report.rows_in == 1000 == data.report.rows_kept
    with (shared_data / "sft" / "alpaca_1k.json").open() as fh:
        raw = json.load(fh)
    with_input = next(r for r in raw if r["input"])
    row = next(
        x
        for x in data.train + data.validation
        if x["messages"][-1]["content"] == with_input["output"].strip()
    )
    user = row["messages"][0]["content"]
    assert user.startswith(with_input["instruction"].strip()) and with_input["input"] in user


def test_csv_source_with_a_bad_row(tmp_path: Path) -> None:
    src = tmp_path / "rows.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "completion", "topic"])
        w.writerow(["What is a spoke?", "A thin rod from hub to rim.", "bikes"])
        w.writerow(["Multi\nline prompt?", "Yes, quoted newlines are fine.", "csv"])
        w.writerow(["too", "many", "fields", "here"])
        w.writerow(["Where?", "", "bikes"])
    data = prepare(DataConfig(source=str(src), validation_fraction=0))
    assert [m["messages"][0]["content"] for m in data.train] == [
        "What is a spoke?",
        "Multi\nline prompt?",
    ]
    reasons = {(r["line"], r["reason"]) for r in data.rejects}
    # the multi-line row spans lines 3-4, so the bad row starts on line 5
    assert reasons == {(5, "malformed_csv"), (6, "empty_answer")}
    assert data.report.categories == {"bikes": 1, "csv": 1}


def test_sqlite_matches_jsonl(tmp_path: Path) -> None:
    url = persona_sqlite_url(tmp_path / "persona.db")
    sql = prepare(DataConfig(source=url, query=PERSONA_QUERY))
    js = prepare(DataConfig(source=str(persona_sample_path())))
    assert sql.train == js.train and sql.validation == js.validation
    assert sql.report.categories == js.report.categories


def test_sqlite_errors(tmp_path: Path) -> None:
    db = persona_sqlite_path(tmp_path / "p.db")
    with pytest.raises(ConfigError, match="query is required"):
        prepare(DataConfig(source=f"sqlite:///{db}"))
    with pytest.raises(ConfigError, match=r"query failed.*no such table: nope"):
        prepare(DataConfig(source=f"sqlite:///{db}", query="SELECT * FROM nope"))
    with pytest.raises(NotFoundError, match="does not exist"):
        prepare(DataConfig(source=f"sqlite:///{tmp_path / 'missing.db'}", query="SELECT 1"))
    assert not (tmp_path / "missing.db").exists()  # never created as a side effect
    # read-only: a query cannot change the user's database
    with pytest.raises(ConfigError, match="readonly"):
        prepare(DataConfig(source=f"sqlite:///{db}", query="DELETE FROM reflections"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM reflections").fetchone()[0] == len(_rows())


def test_unreachable_postgres_names_host_and_db_without_password() -> None:
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:9/scores"
    with pytest.raises(UnavailableError) as info:
        prepare(DataConfig(source=url, query="SELECT 1"))
    line = info.value.one_line()
    assert "127.0.0.1" in line and "scores" in line
    assert "s3cr3t-pw" not in line and "\n" not in line
    assert "s3cr3t-pw" not in mask_url(url) and "alice" in mask_url(url)


def test_hf_local_dataset_saved_to_disk(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    rows = _rows()[:30]
    ds = Dataset.from_list(
        [
            {"instruction": r["question"], "output": r["answer"], "category": r["category"]}
            for r in rows
        ]
    )
    DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(tmp_path / "dd"))
    data = prepare(DataConfig(source=f"hf:{tmp_path / 'dd'}", validation_fraction=0))
    assert len(data.train) == 30
    assert data.train[0]["messages"][-1]["content"] == rows[0]["answer"]
    test = prepare(DataConfig(source=f"hf:{tmp_path / 'dd'}", split="test"))
    assert test.report.rows_in == 5
    with pytest.raises(ConfigError, match=r"no split 'dev'.*train, test"):
        prepare(DataConfig(source=f"hf:{tmp_path / 'dd'}", split="dev"))
    # a folder of data files goes through load_dataset's local builders
    (tmp_path / "files").mkdir()
    ds.to_json(str(tmp_path / "files" / "train.jsonl"))
    files = prepare(DataConfig(source=f"hf:{tmp_path / 'files'}", validation_fraction=0))
    assert files.train == data.train
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    parquet = prepare(DataConfig(source=f"hf:{tmp_path / 'rows.parquet'}", validation_fraction=0))
    assert parquet.train == data.train


def test_hub_names_are_refused() -> None:
    with pytest.raises(NotFoundError, match="local files only"):
        prepare(DataConfig(source="hf:tatsu-lab/alpaca"))


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "rows.xlsx").write_text("x")
    with pytest.raises(ConfigError, match=r"unknown file type '\.xlsx'"):
        prepare(DataConfig(source=str(tmp_path / "rows.xlsx")))
    with pytest.raises(NotFoundError, match=r"nope\.jsonl does not exist"):
        prepare(DataConfig(source=str(tmp_path / "nope.jsonl")))
