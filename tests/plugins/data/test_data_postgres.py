"""PostgreSQL as a data source on a real server, side by side with SQLite on the same rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hwkit.errors import ConfigError
from hwkit.plugins.data import DataConfig, prepare
from tests.pg_fixture import PROFILES, postgres_server, postgres_url, sample_rows  # noqa: F401

pytestmark = pytest.mark.postgres

QUERY = "SELECT question, answer, category, confidence FROM reflections ORDER BY id"


def _sqlite_copy(path: Path) -> str:
    """The same rows and confidence values as the PostgreSQL fixture, in SQLite."""
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE reflections (id integer PRIMARY KEY, question text, "
            "answer text, category text, confidence real)"
        )
        conn.executemany(
            "INSERT INTO reflections VALUES (?, ?, ?, ?, ?)",
            [
                (r["id"], r["question"], r["answer"], r["category"], 0.5 + (int(r["id"]) % 5) / 10)
                for r in sample_rows()
            ],
        )  # type: ignore[call-overload]
    conn.close()
    return f"sqlite:///{path}"


def test_postgres_and_sqlite_give_the_same_prepared_data(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    sqlite_url = _sqlite_copy(tmp_path / "same.db")
    for cfg in (dict(query=QUERY), dict(query=QUERY, min_confidence=0.75)):
        pg = prepare(DataConfig(source=postgres_url, **cfg))
        lite = prepare(DataConfig(source=sqlite_url, **cfg))
        assert pg.train == lite.train and pg.validation == lite.validation
        assert pg.report.rejected_by_reason == lite.report.rejected_by_reason
        assert [r["row"] for r in pg.rejects] == [r["row"] for r in lite.rejects]
    # confidence = 0.5 + (id % 5) / 10, so ids with id % 5 in (0, 1, 2) fall below 0.75
    low = sum(1 for r in sample_rows() if int(r["id"]) % 5 < 3)  # type: ignore[call-overload]
    assert pg.report.rejected_by_reason == {"low_confidence": low}
    assert pg.report.rows_in == len(sample_rows()) == pg.report.rows_kept + low


def test_profile_scorer_template_from_jsonb(postgres_url: str) -> None:  # noqa: F811
    cfg = DataConfig(
        source=postgres_url,
        query="SELECT profile_text, score, reasons FROM profiles ORDER BY id",
        template="Score this profile from 1 to 10 and return JSON.\n\nProfile: {profile_text}",
        mapping={"target": ["score", "reasons"]},
        validation_fraction=0,
    )
    data = prepare(cfg)
    assert len(data.train) == len(PROFILES)
    for row, (text, score, reasons) in zip(data.train, PROFILES, strict=True):
        user, assistant = row["messages"]
        assert user["content"].endswith(f"Profile: {text}")
        assert json.loads(assistant["content"]) == {"score": score, "reasons": reasons}


def test_postgres_query_error_is_one_line(postgres_url: str) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match=r'query failed.*"nope" does not exist') as info:
        prepare(DataConfig(source=postgres_url, query="SELECT nope FROM reflections"))
    assert "\n" not in info.value.one_line()


def test_password_never_reaches_logs_report_or_rejects(postgres_url: str) -> None:  # noqa: F811
    from structlog.testing import capture_logs

    # trust auth ignores the password, so the URL works and still carries a secret
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:pa55-Secret@")
    with capture_logs() as logs:
        data = prepare(DataConfig(source=url, query=QUERY, min_confidence=0.75))
    assert data.report.rows_kept > 0 and data.rejects
    assert "postgres:***@" in data.report.source
    seen = json.dumps([logs, data.report.to_json_dict(), data.rejects], default=str)
    assert "pa55-Secret" not in seen
    assert any(e.get("event") == "data.read" for e in logs)
