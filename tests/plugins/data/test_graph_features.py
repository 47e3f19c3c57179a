"""``hwkit data graph-features``: PageRank, degrees and communities joined onto rows.

A hand-made graph whose answer is obvious (two dense groups joined by one edge, one account
everyone follows, one row with no edges, one edge to an account outside the rows) checks the
numbers against networkx run directly; the real profiles/follows data checks the join, the
unknown-id count (against a count made here with the csv module) and the CLI.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import networkx as nx
import pytest
from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import ConfigError
from hwkit.plugins.data.graph import FEATURES, graph_features, write_outputs
from hwkit.rejects import read_rejects
from tests.cli import run_hwkit

runner = CliRunner()

# Group 1: b, c, d follow each other and a; a follows nobody. Group 2: e, f, h follow each
# other. h -> a is the only bridge; b -> zz points outside the rows; g has no edge.
GROUP1 = ["a", "b", "c", "d"]
GROUP2 = ["e", "f", "h"]
EDGES = (
    [(x, "a") for x in "bcd"]
    + [(x, y) for x in "bcd" for y in "bcd" if x != y]
    + [(x, y) for x in GROUP2 for y in GROUP2 if x != y]
    + [("h", "a"), ("b", "zz")]
)
ROWS = [
    # id, follower_count, likes
    ("a", "100", "50"),
    ("b", "10", "5"),
    ("c", "0", "3"),  # no followers: divided by 1
    ("d", "4", "n/a"),  # not a number: None, counted
    ("e", "20", "2"),
    ("f", "20", "2"),
    ("h", "20", "2"),
    ("g", "5", "1"),
]


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    rows = write_csv(tmp_path / "people.csv", ["user_id", "follower_count", "likes"], ROWS)
    edges = write_csv(tmp_path / "edges.csv", ["source", "target"], EDGES)
    return rows, edges


def reference_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(r[0] for r in ROWS)
    graph.add_edges_from(EDGES)
    return graph


def test_tiny_graph_matches_networkx(tiny: tuple[Path, Path]) -> None:
    rows_path, edges_path = tiny
    result = graph_features(str(rows_path), str(edges_path), rate_cols=["likes"])
    by_id = {r["user_id"]: r for r in result.rows}
    assert list(by_id) == [r[0] for r in ROWS]  # every row, in source order
    expected = nx.pagerank(reference_graph(), alpha=0.85)
    for node, row in by_id.items():
        assert row["pagerank"] == pytest.approx(expected[node], abs=1e-12)
    # a, followed by all of its group and by h, leads its group; symmetric nodes tie
    assert max(GROUP1, key=lambda n: by_id[n]["pagerank"]) == "a"
    assert by_id["a"]["pagerank"] > 1.5 * by_id["b"]["pagerank"]
    assert by_id["c"]["pagerank"] == pytest.approx(by_id["d"]["pagerank"])
    assert by_id["e"]["pagerank"] == pytest.approx(by_id["f"]["pagerank"])
    assert by_id["a"]["in_degree"] == 4 and by_id["a"]["out_degree"] == 0
    assert by_id["b"]["out_degree"] == 4 and by_id["e"]["in_degree"] == 2
    # communities: the two groups (zz joins b's group), g alone; largest is 0
    groups = {n: r["community"] for n, r in by_id.items()}
    assert len({groups[n] for n in GROUP1}) == 1 and len({groups[n] for n in GROUP2}) == 1
    assert groups["a"] == 0 and by_id["a"]["community_size"] == 5  # a, b, c, d and zz
    assert groups["e"] == 1 and by_id["e"]["community_size"] == 3
    assert groups["g"] == 2 and by_id["g"]["community_size"] == 1
    direct = nx.community.louvain_communities(reference_graph().to_undirected(), seed=0)
    assert sorted(map(sorted, direct)) == [["a", "b", "c", "d", "zz"], ["e", "f", "h"], ["g"]]
    # the row with no edges: degree 0 and the isolated-node PageRank networkx gives it
    assert by_id["g"]["in_degree"] == by_id["g"]["out_degree"] == 0
    assert by_id["g"]["pagerank"] == pytest.approx(expected["g"])
    # rates per follower, zero followers counted as one, a non-number as None
    assert by_id["a"]["likes_per_follower"] == pytest.approx(0.5)
    assert by_id["c"]["likes_per_follower"] == pytest.approx(3.0)
    assert by_id["d"]["likes_per_follower"] is None
    report = result.report
    assert report["rate_missing"] == {"likes_per_follower": 1}
    assert report["id_column"] == "user_id"
    assert (report["source_column"], report["target_column"]) == ("source", "target")
    assert report["nodes"] == 9 and report["edges"] == len(EDGES)
    assert report["unknown_id_edges"] == 1 and report["unknown_id_examples"] == ["zz"]
    assert report["communities"] == 3 and report["largest_communities"] == [5, 3, 1]
    top = sorted(expected, key=lambda n: -expected[n])[:5]
    assert [t["id"] for t in report["top_pagerank"]] == top
    assert report["pagerank_sum"] == pytest.approx(1.0)
    # a rerun numbers the communities the same
    again = graph_features(str(rows_path), str(edges_path), rate_cols=["likes"])
    assert [r["community"] for r in again.rows] == [r["community"] for r in result.rows]


def test_sqlite_edges_with_integer_ids_join_csv_rows(tmp_path: Path) -> None:
    """Ids read as integers from SQL meet the same ids read as text from CSV."""
    rows = write_csv(tmp_path / "p.csv", ["id", "name"], [("1", "x"), ("2", "y"), ("3", "z")])
    db = tmp_path / "g.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE follows (src INTEGER, dst INTEGER)")
        conn.executemany("INSERT INTO follows VALUES (?, ?)", [(1, 2), (3, 2), (2, 99)])
    result = graph_features(
        str(rows),
        f"sqlite:///{db}",
        edges_query="SELECT src, dst FROM follows",
    )
    by_id = {r["id"]: r for r in result.rows}
    assert by_id["2"]["in_degree"] == 2 and by_id["2"]["out_degree"] == 1
    assert result.report["unknown_id_edges"] == 1
    assert result.report["unknown_id_examples"] == ["99"]


def test_real_profiles(shared_data: Path) -> None:
    folder = shared_data / "profiles"
    result = graph_features(
        str(folder / "profiles.csv"), str(folder / "follows.csv"), rate_cols=["likes_30d"]
    )
    with (folder / "profiles.csv").open(newline="") as fh:
        profiles = list(csv.DictReader(fh))
    with (folder / "follows.csv").open(newline="") as fh:
        follows = list(csv.DictReader(fh))
    ids = {p["twitter_id"] for p in profiles}
    unknown = [e for e in follows if e["follower_id"] not in ids or e["followed_id"] not in ids]
    report = result.report
    # usernames repeat in this sample; the edges are keyed by twitter_id, which is guessed
    assert report["id_column"] == "twitter_id"
    assert len(result.rows) == len(profiles) == 1500
    for row in result.rows:
        assert all(row[f] is not None for f in FEATURES), row["twitter_id"]
    assert report["edges"] == len(follows) and report["unknown_id_edges"] == len(unknown)
    outside = {e[k] for e in unknown for k in ("follower_id", "followed_id")} - ids
    assert report["unknown_ids"] == len(outside) and report["nodes"] == len(ids) + len(outside)
    assert report["pagerank_sum"] == pytest.approx(1.0)
    direct = nx.DiGraph()
    direct.add_nodes_from(p["twitter_id"] for p in profiles)
    direct.add_edges_from((e["follower_id"], e["followed_id"]) for e in follows)
    expected = nx.pagerank(direct, alpha=0.85)
    assert sum(expected.values()) == pytest.approx(1.0)
    for row in result.rows[:50]:
        assert row["pagerank"] == pytest.approx(expected[row["twitter_id"]], abs=1e-12)
    sizes = [r["community_size"] for r in result.rows]
    assert max(sizes) == report["largest_communities"][0]
    first = result.rows[0]
    assert first["likes_30d_per_follower"] == pytest.approx(
        float(first["likes_30d"]) / max(float(first["follower_count"]), 1)
    )


def test_cli_writes_csv_report_and_rejects(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "profiles"
    out = tmp_path / "features.csv"
    args = ["data", "graph-features", "--rows", str(folder / "profiles.csv")]
    args += ["--edges", str(folder / "follows.csv"), "--rate", "likes_30d", "--rate", "posts_30d"]
    result = runner.invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    report = json.loads((tmp_path / "features.report.json").read_text())
    assert printed == report and report["out"] == str(out)
    assert report["rows_out"] == 1500 and report["unknown_id_edges"] == 3310
    assert report["rejected"] == 0 and read_rejects(tmp_path / "features.rejects.jsonl") == []
    with out.open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == 1500
    assert {*FEATURES, "likes_30d_per_follower", "posts_30d_per_follower"} <= set(written[0])
    plain = runner.invoke(app, [*args, "--out", str(tmp_path / "f.jsonl")])
    assert plain.exit_code == 0, plain.output
    assert "3310 edges, 400 ids not in the rows" in plain.stdout


def test_rows_and_edges_without_ids_go_to_rejects(tmp_path: Path) -> None:
    rows_path = write_csv(
        tmp_path / "people.csv", ["user_id", "follower_count"], [*[r[:2] for r in ROWS], ("", "9")]
    )
    edges = write_csv(
        tmp_path / "holes.csv",
        ["follower_id", "followed_id"],
        [("a", "b"), ("", "c"), ("c", "  "), ("b", "a")],
    )
    out = tmp_path / "out.jsonl"
    result = graph_features(str(rows_path), str(edges), id_col="user_id")
    paths = write_outputs(result, out)
    rejects = read_rejects(paths["rejects"])
    assert [(Path(r.source).name, r.reason, r.line) for r in rejects] == [
        ("holes.csv", "missing_endpoint", 3),
        ("holes.csv", "missing_endpoint", 4),
        ("people.csv", "missing_id", len(ROWS) + 2),
    ]
    assert rejects[0].detail == "empty follower_id" and rejects[1].detail == "empty followed_id"
    assert rejects[0].record == {"follower_id": "", "followed_id": "c"}
    report = result.report
    assert report["edges"] == 2 and report["rows_in"] == len(ROWS) + 1
    assert report["rejected_by_reason"] == {"missing_endpoint": 2, "missing_id": 1}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == report["rows_out"] == len(ROWS) and rows[0]["in_degree"] == 1
    assert json.loads(paths["report"].read_text())["rejects_path"] == str(paths["rejects"])


def test_missing_id_column_lists_the_columns(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    rows_path, edges_path = tiny
    out = tmp_path / "o.jsonl"
    args = ["data", "graph-features", "--rows", str(rows_path), "--edges", str(edges_path)]
    result = runner.invoke(app, [*args, "--id", "handle", "--out", str(out)])
    assert isinstance(result.exception, ConfigError)
    line = result.exception.one_line()
    assert "'handle' not found" in line and "user_id, follower_count, likes" in line
    assert "--id" in line and not out.exists()
    # through the real command: one line on stderr, exit 3
    proc = run_hwkit(*args, "--id", "handle", "--out", str(out))
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and "people.csv" in proc.stderr


def test_other_bad_inputs(tiny: tuple[Path, Path], shared_data: Path, tmp_path: Path) -> None:
    rows_path, edges_path = tiny
    with pytest.raises(ConfigError, match="'views' \\(--rate\\) not found"):
        graph_features(str(rows_path), str(edges_path), rate_cols=["views"])
    with pytest.raises(ConfigError, match="edge source: column 'from_id' not found"):
        graph_features(str(rows_path), str(edges_path), source_col="from_id")
    with pytest.raises(ConfigError, match="not unique"):
        folder = shared_data / "profiles"
        graph_features(str(folder / "profiles.csv"), str(folder / "follows.csv"), id_col="username")
    clash = write_csv(tmp_path / "c.csv", ["user_id", "pagerank"], [("a", "1")])
    with pytest.raises(ConfigError, match="already have column"):
        graph_features(str(clash), str(edges_path))
    result = runner.invoke(
        app,
        ["data", "graph-features", "--rows", "x.csv", "--edges", "y.csv", "--out", "o.parquet"],
    )
    assert isinstance(result.exception, ConfigError) and ".jsonl or .csv" in str(result.exception)


def test_same_output_in_processes_with_other_hash_seeds(shared_data: Path, tmp_path: Path) -> None:
    """Louvain iterates over sets; with string ids their order followed PYTHONHASHSEED and
    each process found another partition (18 to 23 communities) despite the fixed seed."""
    folder = shared_data / "profiles"
    written = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}.jsonl"
        proc = run_hwkit(
            *("data", "graph-features", "--rows", str(folder / "profiles.csv")),
            *("--edges", str(folder / "follows.csv"), "--out", str(out)),
            PYTHONHASHSEED=hash_seed,
        )
        assert proc.returncode == 0, proc.stderr
        written.append(out.read_text())
    assert written[0] == written[1]
