"""Readers for JSONL/JSON/CSV files, SQL databases (SQLAlchemy) and local Hugging Face datasets.

Each reader returns every row it saw: good rows as :class:`RawRecord`, bad ones (a malformed
JSON line, a CSV row with too many fields) as rejects with their line number, so one bad line
never costs the rest of the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.extras import install_hint, require
from hwkit.log import get_logger
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.records import RawRecord, Rejects

log = get_logger(__name__)

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")


@dataclass
class Loaded:
    """Everything a source produced."""

    name: str
    records: list[RawRecord] = field(default_factory=list)
    rejects: Rejects = field(default_factory=lambda: Rejects(""))
    rows_in: int = 0

    def columns(self) -> list[str]:
        """Union of field names in first-seen order (rows of a JSONL file may differ)."""
        seen: dict[str, None] = {}
        for rec in self.records:
            for key in rec.data:
                seen.setdefault(key, None)
        return list(seen)


def is_sql_url(source: str) -> bool:
    scheme = source.split("://", 1)[0].split("+", 1)[0].lower() if "://" in source else ""
    return scheme in SQL_SCHEMES


def mask_url(source: str) -> str:
    """The source as it may be shown or logged: a database URL loses its password."""
    if not is_sql_url(source):
        return source
    try:
        from sqlalchemy.engine import make_url

        return make_url(source).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: hide everything between :// and @
        head, _, rest = source.partition("://")
        return f"{head}://***@{rest.rpartition('@')[2]}" if "@" in rest else source


def load(cfg: DataConfig) -> Loaded:
    """Read all rows of ``cfg.source``."""
    source = cfg.source
    if is_sql_url(source):
        return _read_sql(source, cfg.query)
    if cfg.query:
        raise ConfigError(
            f"query is set but source {source!r} is not a database URL",
            hint="use sqlite:///FILE.db or postgresql://USER@HOST/DB, or drop query",
        )
    if source.startswith("hf:"):
        return _read_hf(source[3:], cfg.split)
    path = Path(source).expanduser()
    if not path.exists():
        raise NotFoundError(f"data source {path} does not exist")
    if path.is_dir():
        raise ConfigError(
            f"data source {path} is a folder",
            hint="give a .jsonl/.json/.csv file, or hf:PATH for a saved Hugging Face dataset",
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if ext == ".json":
        return _read_json(path)
    if ext in (".csv", ".tsv"):
        return _read_csv(path, delimiter="\t" if ext == ".tsv" else ",")
    raise ConfigError(
        f"data source {path}: unknown file type {ext or '(none)'!r}",
        hint="supported: .jsonl, .json, .csv, .tsv (optionally .gz), sqlite:///, "
        "postgresql://, hf:",
    )


def _open_text(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _read_jsonl(path: Path) -> Loaded:
    out = Loaded(str(path), rejects=Rejects(str(path)))
    with _open_text(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                out.rows_in += 1
                out.rejects.add(
                    None,
                    "bad_encoding",
                    f"not UTF-8: {exc.reason}",
                    locator="line",
                    position=lineno,
                    record=raw.decode("utf-8", "replace"),
                )
                continue
            if not text.strip():
                continue
            out.rows_in += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                out.rejects.add(
                    None,
                    "malformed_json",
                    f"{exc.msg} at column {exc.colno}",
                    locator="line",
                    position=lineno,
                    record=text.rstrip("\r\n"),
                )
                continue
            if not isinstance(obj, dict):
                out.rejects.add(
                    None,
                    "not_an_object",
                    f"expected a JSON object, got {type(obj).__name__}",
                    locator="line",
                    position=lineno,
                    record=obj,
                )
                continue
            out.records.append(RawRecord(obj, "line", lineno))
    log.debug("data.read", source=str(path), rows=out.rows_in, rejected=len(out.rejects.items))
    return out


def _read_json(path: Path) -> Loaded:
    with _open_text(path) as fh:
        text = fh.read().decode("utf-8-sig")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line under a .json name
            return _read_jsonl(path)
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            hint="fix the file, or save it as JSON lines (.jsonl) so one bad line is rejected",
        ) from None
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise ConfigError(
                f"{path}: expected a JSON array of objects, got an object",
                hint="store the rows as a top-level array or as JSON lines",
            )
        doc = doc[lists[0]]
    if not isinstance(doc, list):
        raise ConfigError(f"{path}: expected a JSON array of objects")
    out = Loaded(str(path), rejects=Rejects(str(path)))
    for i, obj in enumerate(doc, start=1):
        out.rows_in += 1
        if isinstance(obj, dict):
            out.records.append(RawRecord(obj, "row", i))
        else:
            out.rejects.add(
                None,
                "not_an_object",
                f"expected a JSON object, got {type(obj).__name__}",
                locator="row",
                position=i,
                record=obj,
            )
    return out


def _read_csv(path: Path, *, delimiter: str) -> Loaded:
    out = Loaded(str(path), rejects=Rejects(str(path)))
    with _open_text(path) as raw:
        fh = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return out
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable CSV header: {exc}") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header) or any(not h for h in header):
            raise ConfigError(
                f"{path} line 1: CSV header has empty or repeated column names: {header}",
                hint="give every column a unique name",
            )
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                out.rows_in += 1
                out.rejects.add(
                    None, "malformed_csv", str(exc), locator="line", position=start, record=None
                )
                continue
            if not values or all(not v.strip() for v in values):
                continue
            out.rows_in += 1
            if len(values) != len(header):
                out.rejects.add(
                    None,
                    "malformed_csv",
                    f"row has {len(values)} fields, header has {len(header)}",
                    locator="line",
                    position=start,
                    record=values,
                )
                continue
            out.records.append(RawRecord(dict(zip(header, values, strict=True)), "line", start))
    return out


def _engine_url(source: str) -> str:
    """Pick psycopg 3 for bare postgresql:// URLs (SQLAlchemy would default to psycopg2)."""
    head, sep, rest = source.partition("://")
    if head.lower() in ("postgresql", "postgres"):
        return f"postgresql+psycopg{sep}{rest}"
    return source


def _read_sql(source: str, query: str | None) -> Loaded:
    shown = mask_url(source)
    require("sqlalchemy", purpose=f"the database source {shown}")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

    if not query:
        raise ConfigError(
            f"source {shown} is a database: query is required",
            hint='set query = "SELECT question, answer, category FROM reflections"',
        )
    try:
        url = make_url(_engine_url(source))
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL {shown}: {exc}") from None
    password = url.password
    where = f"host {url.host or 'localhost'}, database {url.database}"
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if not url.database or not Path(url.database).is_file():
            raise NotFoundError(
                f"SQLite database {url.database} does not exist",
                hint="check the path after sqlite:///",
            )
        where = f"file {url.database}"
        # read-only: a query can never change the user's data
        url = url.set(
            database=f"file:{Path(url.database).resolve()}?mode=ro", query={"uri": "true"}
        )
    elif url.get_backend_name() == "postgresql":
        if url.get_driver_name() == "psycopg":
            require("psycopg", purpose=f"the PostgreSQL source {shown}")
        connect_args["connect_timeout"] = 5
    out = Loaded(shown, rejects=Rejects(shown))

    def scrub(msg: str) -> str:
        msg = msg.strip().splitlines()[0] if msg.strip() else msg
        return msg.replace(str(password), "***") if password else msg

    try:
        engine = create_engine(url, connect_args=connect_args)
    except NoSuchModuleError as exc:
        raise ConfigError(
            f"no SQLAlchemy driver for {shown}: {exc}", hint=install_hint("sqlalchemy")
        ) from None
    except ImportError as exc:  # a driver hwkit's extras do not bring (MySQL, MSSQL...)
        raise UnavailableError(
            f"database driver missing for {shown}: {exc}",
            hint=install_hint(exc.name or "sqlalchemy"),
        ) from None
    try:
        try:
            conn = engine.connect()
        except DBAPIError as exc:
            raise UnavailableError(
                f"cannot reach database ({where}): {scrub(str(exc.orig))}",
                hint="check that the server runs and the URL's host, port and user are right",
            ) from None
        with conn:
            try:
                result = conn.execute(text(query))
                for i, row in enumerate(result.mappings(), start=1):
                    out.rows_in += 1
                    out.records.append(RawRecord(dict(row), "row", i))
            except SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                raise ConfigError(
                    f"query failed on {shown}: {scrub(str(orig))}",
                    hint="check the table and column names in query",
                ) from None
    finally:
        engine.dispose()
    log.info("data.read", source=shown, rows=out.rows_in)
    return out


def _read_hf(path_str: str, split: str) -> Loaded:
    path = Path(path_str).expanduser()
    if not path.exists():
        raise NotFoundError(
            f"Hugging Face dataset {path_str!r} is not a local path",
            hint="hwkit reads datasets from local files only: save_to_disk() a dataset or give "
            "a folder of .jsonl/.csv/.parquet files",
        )
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    ds: Any
    if path.is_dir() and any((path / m).exists() for m in markers):
        ds = load_from_disk(str(path))
    elif path.is_dir():
        ds = load_dataset(str(path))
    else:
        builders = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
        suffix = path.suffix.lower() if path.suffix.lower() != ".gz" else Path(path.stem).suffix
        if suffix not in builders:
            raise ConfigError(
                f"hf:{path}: unsupported file type {suffix!r}",
                hint="use .jsonl, .json, .csv or .parquet",
            )
        ds = load_dataset(builders[suffix], data_files=str(path))
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise ConfigError(
                f"hf:{path} has no split {split!r}",
                hint=f"available splits: {', '.join(ds)}; set split",
            )
        ds = ds[split]
    assert isinstance(ds, Dataset)
    name = f"hf:{path}"
    out = Loaded(name, rejects=Rejects(name))
    for i, row in enumerate(ds, start=1):
        out.rows_in += 1
        out.records.append(RawRecord(row, "row", i))
    return out
