"""(query, relevant document) pairs for embedder fine-tuning, from JSONL or a BEIR directory.

JSONL rows are ``{"query": ..., "positive": ...}`` (optional ``query_id``, ``positive_id``).
A BEIR directory has ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``; every
qrel with a positive score becomes a pair (document text = title + " " + text, as BEIR
evaluates). Bad rows never stop a run: they go to a rejects file (:mod:`hwkit.rejects`)
with file, line, a reason code and a readable detail.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.errors import ConfigError, NotFoundError
from hwkit.log import get_logger
from hwkit.rejects import Reject, write_rejects

log = get_logger(__name__)


@dataclass(frozen=True)
class Pair:
    """One training example: a query and a document relevant to it."""

    query: str
    positive: str
    query_id: str = ""
    positive_id: str = ""

    @property
    def query_key(self) -> str:
        return self.query_id or _text_key(self.query)

    @property
    def positive_key(self) -> str:
        return self.positive_id or _text_key(self.positive)


def _reject(path: Path, line: int, reason: str, detail: str, raw: str) -> Reject:
    return Reject(reason, record=raw[:500], source=str(path), line=line, detail=detail)


def _text_key(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()


def _nonempty_str(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) and value.strip() else None


Problem = tuple[str, str]  # (reason code, readable detail)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, str, Any, Problem | None]]:
    """(line number, raw line, parsed value, problem) for every non-blank line."""
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, raw.rstrip("\n"), json.loads(raw), None
            except json.JSONDecodeError as exc:
                yield lineno, raw.rstrip("\n"), None, ("malformed_json", f"invalid JSON: {exc.msg}")


def read_jsonl_pairs(path: Path) -> tuple[list[Pair], list[Reject]]:
    """Pairs from a JSONL file of ``{"query", "positive"}`` objects, and the rejected rows."""
    pairs: list[Pair] = []
    rejects: list[Reject] = []
    for lineno, raw, row, error in _jsonl_rows(path):
        if error is None and not isinstance(row, dict):
            error = ("not_an_object", f"expected a JSON object, got {type(row).__name__}")
        if error is None:
            query, positive = _nonempty_str(row, "query"), _nonempty_str(row, "positive")
            missing = [k for k, v in (("query", query), ("positive", positive)) if v is None]
            if missing:
                error = (
                    "missing_field",
                    f"field(s) {', '.join(missing)} missing, empty or not a string",
                )
            else:
                assert query is not None and positive is not None
                pairs.append(
                    Pair(
                        query,
                        positive,
                        str(row.get("query_id", "")),
                        str(row.get("positive_id", "")),
                    )
                )
                continue
        reason, detail = error or ("invalid_row", "invalid row")
        rejects.append(_reject(path, lineno, reason, detail, raw))
    return pairs, rejects


def _beir_texts(path: Path, *, with_title: bool) -> tuple[dict[str, str], list[Reject]]:
    texts: dict[str, str] = {}
    rejects: list[Reject] = []
    for lineno, raw, row, error in _jsonl_rows(path):
        if error is None and not (isinstance(row, dict) and row.get("_id") not in (None, "")):
            error = ("missing_id", "expected an object with a non-empty _id")
        if error is None:
            text = str(row.get("text") or "")
            title = str(row.get("title") or "") if with_title else ""
            joined = f"{title} {text}".strip() if title else text.strip()
            if joined:
                texts[str(row["_id"])] = joined
                continue
            error = ("no_text", "no text")
        rejects.append(_reject(path, lineno, *error, raw))
    return texts, rejects


def read_beir_pairs(root: Path, split: str = "train") -> tuple[list[Pair], list[Reject]]:
    """Pairs from a BEIR directory's ``qrels/<split>.tsv`` (positive scores only)."""
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for what, file in files.items():
        if not file.is_file():
            raise NotFoundError(
                f"BEIR {what} file {file} not found",
                hint="a BEIR directory holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv",
            )
    corpus, rejects = _beir_texts(files["corpus"], with_title=True)
    queries, query_rejects = _beir_texts(files["queries"], with_title=False)
    rejects += query_rejects
    pairs: list[Pair] = []
    qrels = files["qrels"]
    with qrels.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, cols in enumerate(reader, start=1):
            if lineno == 1 and cols and cols[0] == "query-id":
                continue
            raw = "\t".join(cols)
            if len(cols) < 3:
                detail = "expected 3 tab-separated columns"
                rejects.append(_reject(qrels, lineno, "malformed_qrel", detail, raw))
                continue
            qid, did, score = cols[0], cols[1], cols[2]
            try:
                positive = int(float(score)) > 0
            except ValueError:
                rejects.append(
                    _reject(qrels, lineno, "bad_score", f"score {score!r} is not a number", raw)
                )
                continue
            if not positive:
                continue
            if qid not in queries or did not in corpus:
                missing = "query" if qid not in queries else "document"
                rejects.append(
                    _reject(qrels, lineno, f"unknown_{missing}", f"unknown {missing} id", raw)
                )
                continue
            pairs.append(Pair(queries[qid], corpus[did], qid, did))
    return pairs, rejects


def load_pairs(
    source: Path,
    *,
    split: str = "train",
    rejects_path: Path | None = None,
    limit: int | None = None,
) -> list[Pair]:
    """Pairs from a BEIR directory or a JSONL file; rejected rows go to ``rejects_path``."""
    source = Path(source)
    if source.is_dir():
        pairs, rejects = read_beir_pairs(source, split)
    elif source.is_file():
        pairs, rejects = read_jsonl_pairs(source)
    else:
        raise NotFoundError(
            f"training data {source} not found",
            hint="give a JSONL file of {query, positive} rows or a BEIR directory",
        )
    if rejects:
        where = rejects_path or source.with_name(source.name + ".rejects.jsonl")
        write_rejects(where, rejects)
        first = rejects[0]
        log.warning(
            "rejected training rows",
            count=len(rejects),
            rejects=str(where),
            first=f"{first.where()}: {first.detail}",
        )
    if not pairs:
        detail = f"; first problem: {rejects[0].where()}: {rejects[0].detail}" if rejects else ""
        raise ConfigError(f"no usable (query, positive) pairs in {source}{detail}")
    return pairs[:limit] if limit else pairs
