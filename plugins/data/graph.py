"""Network features as a data step: PageRank, degrees and communities from an edge list,
joined onto rows, plus engagement rates per follower.

The edge list and the rows come through the ordinary source readers (CSV, JSONL, SQLite,
PostgreSQL), so whatever `hwkit data prepare` reads works here too. Nothing is dropped
silently: an edge whose endpoint is not among the rows stays in the graph (it still passes
PageRank mass) and is counted; an edge or row without an id goes to the rejects with why.
networkx is imported inside the functions that need it (the ``data`` extra brings it).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.atomic import write_json_atomic, write_jsonl_atomic, write_text_atomic
from hwkit.errors import ConfigError
from hwkit.extras import require
from hwkit.plugins.data.config import DataConfig
from hwkit.plugins.data.records import RawRecord, Rejects
from hwkit.plugins.data.sources import Loaded, load
from hwkit.rejects import Reject, count_by_reason, write_rejects

if TYPE_CHECKING:
    import networkx as nx

FEATURES = ("pagerank", "in_degree", "out_degree", "community", "community_size")
SOURCE_CANDIDATES = ("source", "src", "from", "follower_id", "follower", "source_id", "u")
TARGET_CANDIDATES = ("target", "dst", "to", "followed_id", "followed", "target_id", "v")
ID_CANDIDATES = ("id", "twitter_id", "user_id", "node_id", "node", "username", "handle")
PAGERANK_ALPHA = 0.85
EXAMPLES = 5
OUT_SUFFIXES = (".jsonl", ".csv")


@dataclass
class Edges:
    """The usable edges of an edge-list source, in source order, and what was rejected."""

    source: str
    source_col: str
    target_col: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    rows_in: int = 0
    rejects: Rejects = field(default_factory=lambda: Rejects(""))

    def ids(self) -> set[str]:
        return {node for pair in self.pairs for node in pair}


@dataclass
class GraphFeatures:
    """The joined rows, the report written beside them and every reject."""

    rows: list[dict[str, Any]]
    report: dict[str, Any]
    rejects: list[Reject]


def read_source(source: str, query: str | None, *, flag: str) -> Loaded:
    """Rows of any hwkit source; ``flag`` names the option in error messages."""
    return load(DataConfig.validated({"source": source, "query": query}, where=flag))


def node_key(value: Any) -> str | None:
    """An id as the graph keys it: text, so ``10000001`` from SQL matches ``"10000001"`` from
    CSV; None for a missing or blank value."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text or None


def pick_column(
    columns: Sequence[str], given: str | None, candidates: Sequence[str], *, what: str, flag: str
) -> str:
    """``given`` checked against ``columns``, else the first candidate present (any case)."""
    listing = ", ".join(columns) or "none"
    if given is not None:
        if given not in columns:
            raise ConfigError(
                f"{what}: column {given!r} not found; columns found: {listing}",
                hint=f"set {flag} to one of them",
            )
        return given
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    raise ConfigError(
        f"{what}: no column found (looked for {'/'.join(candidates[:5])}); "
        f"columns found: {listing}",
        hint=f"set {flag}",
    )


def read_edges(
    source: str,
    query: str | None = None,
    *,
    source_col: str | None = None,
    target_col: str | None = None,
) -> Edges:
    """The edge list: one directed edge per row, source -> target (follower -> followed)."""
    loaded = read_source(source, query, flag="--edges")
    columns = loaded.columns()
    src = pick_column(
        columns,
        source_col,
        SOURCE_CANDIDATES,
        what=f"{loaded.name} edge source",
        flag="--source-col",
    )
    dst = pick_column(
        columns,
        target_col,
        TARGET_CANDIDATES,
        what=f"{loaded.name} edge target",
        flag="--target-col",
    )
    if src == dst:
        raise ConfigError(
            f"{loaded.name}: edge source and target are the same column {src!r}",
            hint="set --source-col and --target-col to two columns",
        )
    edges = Edges(loaded.name, src, dst, rows_in=loaded.rows_in, rejects=loaded.rejects)
    for rec in loaded.records:
        a, b = node_key(rec.data.get(src)), node_key(rec.data.get(dst))
        if a is None or b is None:
            empty = [c for c, v in ((src, a), (dst, b)) if v is None]
            edges.rejects.add(rec, "missing_endpoint", f"empty {' and '.join(empty)}")
            continue
        edges.pairs.append((a, b))
    return edges


def guess_id_column(loaded: Loaded, edge_ids: set[str]) -> str:
    """The id-like column whose values meet the edge ids most often: a handle column may
    exist while the edges are keyed by a numeric id (profiles.csv has both)."""
    columns = loaded.columns()
    named = [c for c in columns if c.lower() in ID_CANDIDATES or c.lower().endswith("_id")]
    best, best_hits = None, 0
    for col in sorted(named, key=lambda c: _rank(c.lower())):
        hits = len({node_key(r.data.get(col)) for r in loaded.records} & edge_ids)
        if hits > best_hits:
            best, best_hits = col, hits
    if best is None:
        raise ConfigError(
            f"{loaded.name}: no id column whose values appear in the edge list "
            f"(looked at {', '.join(named) or 'no id-like column'}); "
            f"columns found: {', '.join(columns) or 'none'}",
            hint="set --id to the rows' column the edge list refers to",
        )
    return best


def _rank(name: str) -> int:
    return ID_CANDIDATES.index(name) if name in ID_CANDIDATES else len(ID_CANDIDATES)


def row_ids(loaded: Loaded, id_col: str) -> tuple[list[RawRecord], list[str]]:
    """The rows that have an id, with their ids; a row without one is rejected, and a
    repeated id is an error (one node cannot stand for two rows)."""
    kept: list[RawRecord] = []
    ids: list[str] = []
    seen: set[str] = set()
    repeated: list[str] = []
    for rec in loaded.records:
        key = node_key(rec.data.get(id_col))
        if key is None:
            loaded.rejects.add(rec, "missing_id", f"empty {id_col}")
            continue
        if key in seen:
            repeated.append(key)
        seen.add(key)
        kept.append(rec)
        ids.append(key)
    if repeated:
        examples = ", ".join(list(dict.fromkeys(repeated))[:EXAMPLES])
        raise ConfigError(
            f"{loaded.name}: id column {id_col!r} is not unique "
            f"({len(repeated)} repeated values, e.g. {examples})",
            hint="set --id to a column with one value per row",
        )
    return kept, ids


def build_graph(nodes: Iterable[str], pairs: Iterable[tuple[str, str]]) -> nx.DiGraph:
    """A directed graph with every row id as a node (rows without edges included)."""
    nx = require("networkx", purpose="hwkit data graph-features")
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(pairs)
    return graph


def communities(graph: nx.DiGraph, seed: int = 0) -> list[set[str]]:
    """Louvain communities of the undirected view, largest first (ties: smallest member id),
    so community 0 is always the largest and a rerun numbers them the same.

    Louvain runs on a plain undirected copy with integer labels, built in insertion order:
    networkx iterates over sets of nodes (in Louvain and in ``to_undirected(as_view=True)``),
    and the order of a set of strings changes with each process's hash seed, so string ids
    gave another partition on each run despite the fixed ``seed`` (18 to 23 communities on
    the profiles data).
    """
    nx = require("networkx", purpose="hwkit data graph-features")
    if graph.number_of_nodes() == 0:
        return []
    names = list(graph.nodes)
    index = {name: i for i, name in enumerate(names)}
    numbered = nx.Graph()
    numbered.add_nodes_from(range(len(names)))
    numbered.add_edges_from((index[a], index[b]) for a, b in graph.edges)
    found = nx.community.louvain_communities(numbered, seed=seed)
    named = ({names[i] for i in c} for c in found)
    return sorted(named, key=lambda c: (-len(c), min(c)))


def node_features(graph: nx.DiGraph, seed: int = 0) -> dict[str, dict[str, Any]]:
    """pagerank, in/out degree, community and its size for every node."""
    nx = require("networkx", purpose="hwkit data graph-features")
    rank = nx.pagerank(graph, alpha=PAGERANK_ALPHA) if graph.number_of_nodes() else {}
    out: dict[str, dict[str, Any]] = {
        node: {
            "pagerank": rank[node],
            "in_degree": graph.in_degree(node),
            "out_degree": graph.out_degree(node),
        }
        for node in graph.nodes
    }
    for number, members in enumerate(communities(graph, seed)):
        for node in members:
            out[node]["community"] = number
            out[node]["community_size"] = len(members)
    return out


def to_number(value: Any) -> float | None:
    """A count cell as a float; None when it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = (
            float(str(value).strip().replace(",", "")) if isinstance(value, str) else float(value)
        )
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def add_rates(
    rows: list[dict[str, Any]], rate_cols: Sequence[str], follower_col: str
) -> dict[str, int]:
    """Add ``COL_per_follower`` = COL / max(followers, 1); a cell that is not a number gives
    None there. Returns, per new column, how many rows got None."""
    missing: dict[str, int] = {}
    for col in rate_cols:
        name = f"{col}_per_follower"
        missing[name] = 0
        for row in rows:
            value, followers = to_number(row.get(col)), to_number(row.get(follower_col))
            if value is None or followers is None:
                row[name] = None
                missing[name] += 1
            else:
                row[name] = value / max(followers, 1.0)
    return missing


def check_columns(
    name: str, columns: Sequence[str], rate_cols: Sequence[str], follower_col: str
) -> None:
    """Rate columns must exist, and feature columns must not (they would be overwritten)."""
    listing = ", ".join(columns) or "none"
    needed = [*rate_cols, follower_col] if rate_cols else []
    for col in needed:
        if col not in columns:
            flag = "--follower-col" if col == follower_col else "--rate"
            raise ConfigError(
                f"{name}: column {col!r} ({flag}) not found; columns found: {listing}",
                hint=f"set {flag} to one of them",
            )
    new = [*FEATURES, *(f"{c}_per_follower" for c in rate_cols)]
    clash = [c for c in new if c in columns]
    if clash:
        raise ConfigError(
            f"{name}: the rows already have column(s) {', '.join(clash)}, "
            "which graph-features adds",
            hint="rename or drop them in the source (or select other columns with --query)",
        )


def graph_features(
    rows_source: str,
    edges_source: str,
    *,
    id_col: str | None = None,
    query: str | None = None,
    edges_query: str | None = None,
    source_col: str | None = None,
    target_col: str | None = None,
    rate_cols: Sequence[str] = (),
    follower_col: str = "follower_count",
    seed: int = 0,
) -> GraphFeatures:
    """Read both sources, compute the node features and join them onto the rows."""
    started = time.perf_counter()
    edges = read_edges(edges_source, edges_query, source_col=source_col, target_col=target_col)
    loaded = read_source(rows_source, query, flag="--rows")
    columns = loaded.columns()
    if id_col is not None:
        id_col = pick_column(columns, id_col, (), what=f"{loaded.name} id", flag="--id")
    else:
        id_col = guess_id_column(loaded, edges.ids())
    check_columns(loaded.name, columns, rate_cols, follower_col)
    records, ids = row_ids(loaded, id_col)
    graph = build_graph(ids, edges.pairs)
    features = node_features(graph, seed)
    rows = [{**rec.data, **features[key]} for rec, key in zip(records, ids, strict=True)]
    rate_missing = add_rates(rows, rate_cols, follower_col)
    known = set(ids)
    unknown_edges = [(a, b) for a, b in edges.pairs if a not in known or b not in known]
    unknown_ids = list(dict.fromkeys(n for pair in unknown_edges for n in pair if n not in known))
    rejects = [*edges.rejects.items, *loaded.rejects.items]
    top = sorted(features.items(), key=lambda kv: (-kv[1]["pagerank"], kv[0]))[:EXAMPLES]
    report: dict[str, Any] = {
        "rows_source": loaded.name,
        "edges_source": edges.source,
        "id_column": id_col,
        "source_column": edges.source_col,
        "target_column": edges.target_col,
        "rows_in": loaded.rows_in,
        "rows_out": len(rows),
        "edge_rows_in": edges.rows_in,
        "nodes": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "duplicate_edges": len(edges.pairs) - graph.number_of_edges(),
        "unknown_id_edges": len(unknown_edges),
        "unknown_ids": len(unknown_ids),
        "unknown_id_examples": unknown_ids[:EXAMPLES],
        "isolated_rows": sum(1 for k in ids if graph.degree(k) == 0),
        "communities": len({f["community"] for f in features.values()}),
        "largest_communities": _largest(features),
        "pagerank_sum": sum(f["pagerank"] for f in features.values()),
        "top_pagerank": [{"id": k, **f, "in_rows": k in known} for k, f in top],
        "rate_columns": {f"{c}_per_follower": c for c in rate_cols},
        "follower_column": follower_col if rate_cols else None,
        "rate_missing": rate_missing,
        "rejected": len(rejects),
        "rejected_by_reason": count_by_reason(rejects),
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return GraphFeatures(rows, report, rejects)


def _largest(features: dict[str, dict[str, Any]]) -> list[int]:
    sizes = {f["community"]: f["community_size"] for f in features.values()}
    return [sizes[c] for c in sorted(sizes)][:EXAMPLES]


def output_paths(out: Path) -> tuple[Path, Path]:
    """``OUT.report.json`` and ``OUT.rejects.jsonl`` beside ``OUT.jsonl``/``OUT.csv``."""
    suffix = out.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise ConfigError(
            f"--out {out}: unknown file type {suffix or '(none)'!r}",
            hint="end it in .jsonl or .csv",
        )
    stem = out.name[: -len(suffix)]
    return out.with_name(f"{stem}.report.json"), out.with_name(f"{stem}.rejects.jsonl")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """JSONL or CSV by suffix, atomically (CSV: the union of columns, first seen first)."""
    if path.suffix.lower() == ".jsonl":
        return write_jsonl_atomic(path, rows)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def write_outputs(result: GraphFeatures, out: Path) -> dict[str, Path]:
    """Rows, rejects and report, each atomically; the report last, naming the other two."""
    report_path, rejects_path = output_paths(out)
    write_rows(out, result.rows)
    write_rejects(rejects_path, result.rejects)
    result.report.update(out=str(out), rejects_path=str(rejects_path))
    write_json_atomic(report_path, result.report)
    return {"rows": out, "rejects": rejects_path, "report": report_path}
