"""A real PostgreSQL server for tests: a throw-away cluster on a free port on 127.0.0.1.

Uses Debian's binaries (``apt-get install postgresql``) from /usr/lib/postgresql/*/bin.
initdb refuses to run as root, so as root the cluster runs as the ``postgres`` user in a
temp folder that user owns. Import the fixtures into a test module:
``from tests.pg_fixture import postgres_server, postgres_url  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install -y postgresql"


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin that has initdb and pg_ctl (or initdb on PATH)."""
    dirs = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for d in reversed(dirs):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    host: str
    port: int
    user: str

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=db,
            autocommit=True,
            connect_timeout=10,
        )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """Start a cluster for the session; stop it and delete its files afterwards."""
    bindir = find_pg_bin()
    if bindir is None:
        pytest.skip(INSTALL_HINT)
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="hwkit-pg-"))
    if os.geteuid() == 0:
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root and no 'postgres' user: apt-get install -y postgresql")
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(base, ignore_errors=True)
            pytest.skip("running as root without runuser to drop to the postgres user")
        os.chown(base, pg.pw_uid, pg.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    run(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    )
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -F"
    try:
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            opts,
            "-w",
            "-t",
            "30",
            "start",
        )
    except RuntimeError as exc:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"{exc}\n{text[-2000:]}") from None
    try:
        yield PgServer("127.0.0.1", port, "postgres")
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def sample_rows() -> list[dict[str, object]]:
    """The bundled persona rows: the same rows go into PostgreSQL and SQLite."""
    from hwkit.plugins.data.samples import persona_sample_path

    with persona_sample_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


PROFILES = [
    (
        "Backend engineer, 6 years Go and PostgreSQL, led a payments migration.",
        8,
        ["relevant stack", "led a migration"],
    ),
    ("Recent graduate, one internship, interested in web design.", 4, ["little experience"]),
    ("Data analyst with strong SQL and dashboards, no Python.", 6, ["strong SQL", "no Python"]),
    (
        "Site reliability engineer, Kubernetes, on-call lead, wrote runbooks.",
        9,
        ["operations depth", "leadership"],
    ),
]


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PgServer) -> str:
    """A database ``hwkit_test`` with ``reflections`` (the persona sample, plus a
    ``confidence`` column) and ``profiles`` (text, score, reasons as jsonb)."""
    with postgres_server.connect() as conn:
        conn.execute("DROP DATABASE IF EXISTS hwkit_test")
        conn.execute("CREATE DATABASE hwkit_test")
    with postgres_server.connect("hwkit_test") as conn:
        conn.execute(
            "CREATE TABLE reflections (id integer PRIMARY KEY, question text NOT NULL, "
            "answer text NOT NULL, category text NOT NULL, confidence real)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO reflections VALUES (%s, %s, %s, %s, %s)",
                [
                    (
                        r["id"],
                        r["question"],
                        r["answer"],
                        r["category"],
                        0.5 + (int(r["id"]) % 5) / 10,
                    )  # type: ignore[call-overload]
                    for r in sample_rows()
                ],
            )
            cur.execute(
                "CREATE TABLE profiles (id serial PRIMARY KEY, profile_text text, "
                "score integer, reasons jsonb)"
            )
            cur.executemany(
                "INSERT INTO profiles (profile_text, score, reasons) VALUES (%s, %s, %s::jsonb)",
                [(t, s, json.dumps(r)) for t, s, r in PROFILES],
            )
    return postgres_server.url("hwkit_test")
