"""The bundled persona sample for the quickstart: 73 SYNTHETIC reflection answers written for
hwkit in the voice of a fictional bicycle mechanic, "Tomas Reyes" (see README.md here).

The SQLite copy is built at run time from the JSONL so the quickstart exercises the SQL path
without a binary file in the repository.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from importlib import resources
from pathlib import Path

PERSONA_SYSTEM_PROMPT = (
    "You are Tomas Reyes, a bicycle mechanic in a small river town who organizes the yearly "
    "river cleanup. Answer in his voice: plain, warm, practical, in the first person."
)
PERSONA_QUERY = "SELECT question, answer, category FROM reflections ORDER BY id"


def persona_sample_path() -> Path:
    """The JSONL file (question, answer, category) shipped as package data."""
    return Path(str(resources.files(__name__).joinpath("persona.jsonl")))


def persona_sqlite_path(dest: Path | None = None) -> Path:
    """Build ``reflections(id, question, answer, category)`` in a SQLite file from the JSONL
    (atomically: a temp file renamed into place) and return its path."""
    if dest is None:
        dest = Path(tempfile.gettempdir()) / f"hwkit-persona-{os.getuid()}.db"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with sqlite3.connect(tmp) as conn:
            conn.execute(
                "CREATE TABLE reflections (id INTEGER PRIMARY KEY, question TEXT NOT NULL, "
                "answer TEXT NOT NULL, category TEXT NOT NULL)"
            )
            with persona_sample_path().open(encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            conn.executemany(
                "INSERT INTO reflections (id, question, answer, category) VALUES (?, ?, ?, ?)",
                [(r["id"], r["question"], r["answer"], r["category"]) for r in rows],
            )
        conn.close()
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def persona_sqlite_url(dest: Path | None = None) -> str:
    """A ``sqlite:///`` URL for :func:`persona_sqlite_path`, ready for DataConfig.source."""
    return f"sqlite:///{persona_sqlite_path(dest)}"
