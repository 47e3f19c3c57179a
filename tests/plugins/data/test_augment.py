"""``hwkit data augment`` through the real CLI app, on the bundled persona sample with the
real SmolLM2 (its GGUF on llama.cpp: the fastest on a CPU) and the real all-MiniLM-L6-v2.

Generation is slow on a shared CPU, so one run generates (one source row and its duplicate,
two attempts, 32 tokens a turn) and the other tests reuse its partial file: rerunning from
it is the resume path, and generates nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from hwkit import jobs
from hwkit.cli import app
from hwkit.errors import ConfigError, HwkitError, UsageError
from hwkit.models import SMOLLM2
from hwkit.plugins.data import DataConfig, prepare
from hwkit.plugins.data.augment import AugmentSettings, partial_path, rejects_path
from hwkit.plugins.data.samples import persona_sample_path

pytestmark = pytest.mark.slow

runner = CliRunner()
MODEL = str(SMOLLM2.gguf_path())
GENERATE = ["--model", MODEL, "--max-new-tokens", "32", "--per-row", "2", "--seed", "12"]
COHERENCE = 0.1


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Generate on one core: llama.cpp takes a thread per core it may use, and its threads
    wait for each other spinning, which on a CPU shared with other work made each call
    ten times slower (84 s against 6 s for 32 tokens, measured on this 2-core machine)."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


class CountingGenerator:
    """The generator load_generator returned, counting generate calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def generate(self, prompt: Any, params: Any) -> Any:
        self.calls += 1
        return self.inner.generate(prompt, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[CountingGenerator]:
    """Every generator augment loads, wrapped to count its calls."""
    made: list[CountingGenerator] = []
    real = jobs.load_generator

    def load(*args: Any, **kwargs: Any) -> Any:
        made.append(CountingGenerator(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(jobs, "load_generator", load)
    return made


def persona_rows(n: int) -> list[dict[str, Any]]:
    with persona_sample_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line, _ in zip(fh, range(n), strict=False)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def augment(source: Path, out: Path, *extra: str) -> dict[str, Any]:
    args = ["data", "augment", str(source), "--out", str(out), *extra, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One persona row and an exact copy of it; two sampled attempts (a followup and a
    continuation) of two generator calls each."""
    folder = tmp_path_factory.mktemp("augment")
    row = persona_rows(1)[0]
    source = write_jsonl(folder / "src.jsonl", [row, dict(row)])
    out = folder / "out.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        made: list[CountingGenerator] = []
        real = jobs.load_generator

        def load(*args: Any, **kwargs: Any) -> Any:
            made.append(CountingGenerator(real(*args, **kwargs)))
            return made[-1]

        mp.setattr(jobs, "load_generator", load)
        with one_core():
            summary = augment(source, out, *GENERATE, "--min-coherence", str(COHERENCE))
    yield {"source": source, "out": out, "summary": summary, "calls": [g.calls for g in made]}


def test_generated_rows_carry_provenance_and_the_coherence_they_claim(
    first_run: dict[str, Any],
) -> None:
    out, summary = first_run["out"], first_run["summary"]
    assert first_run["calls"] == [4] and summary["generator_calls"] == 4
    assert summary["rows_in"] == 2 and summary["duplicate_sources"] == [1]
    assert summary["attempts"] == 2 and summary["kept"] + summary["rejected"] == 2
    rows = read_jsonl(out)
    assert len(rows) == summary["rows_out"] == 2 + summary["kept"]
    src = persona_rows(1)[0]
    for i, row in enumerate(rows[:2]):  # the source rows, unchanged, first
        assert row["provenance"] == {"kind": "source", "row": i}
        assert row["messages"] == [
            {"role": "user", "content": src["question"]},
            {"role": "assistant", "content": src["answer"]},
        ]
    generated = rows[2:]
    rejects = read_jsonl(rejects_path(out))
    assert len(rejects) == summary["rejected"]
    embedder = jobs.load_embedder("torch", "all-MiniLM-L6-v2")
    answer = embedder.embed([src["answer"]])[0]
    scored = [(r, r["provenance"]) for r in generated]
    scored += [(r["record"], r["record"]["provenance"]) for r in rejects if r["score"] is not None]
    for row, prov in scored:
        assert prov["source_row"] == 0  # the duplicate source row is not augmented again
        assert prov["model"] == MODEL and isinstance(prov["seed"], int)
        user, reply = row["messages"][-2]["content"], row["messages"][-1]["content"]
        vec = embedder.embed([f"{user}\n{reply}"])[0]
        assert float(answer @ vec) == pytest.approx(prov["coherence"], abs=2e-3)
    for row in generated:
        prov = row["provenance"]
        assert prov["coherence"] >= COHERENCE
        if prov["kind"] == "continuation":  # the original exchange, then two new turns
            assert row["messages"][:2] == rows[0]["messages"] and len(row["messages"]) == 4
        else:  # a standalone follow-up exchange
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    for reject in rejects:
        assert reject["reason"] and reject["detail"] and "score" in reject
    # the output is an ordinary SFT source for `hwkit data prepare`
    data = prepare(DataConfig(source=str(out), dedupe="none", validation_fraction=0.0))
    assert data.report.rows_in == len(rows) == data.report.rows_kept


def test_rerun_from_the_partial_generates_nothing_and_0_99_rejects_all(
    first_run: dict[str, Any], loaded: list[CountingGenerator], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    shutil.copy(partial_path(first_run["out"]), partial_path(out))
    summary = augment(first_run["source"], out, *GENERATE, "--min-coherence", str(COHERENCE))
    assert loaded == [] and summary["generator_calls"] == 0 and summary["reused"] == 2
    assert out.read_bytes() == first_run["out"].read_bytes()

    # The two switchable text filters off, so every sample that is not empty, cut, too
    # short or an echo (which sampled text that is depends on the CPU's kernels) reaches
    # the embedder, where 0.99 rejects it.
    relaxed = ["--allow-statements", "--max-repetition", "1"]
    strict = augment(first_run["source"], out, *GENERATE, *relaxed, "--min-coherence", "0.99")
    assert loaded == [] and strict["kept"] == 0 and strict["rejected"] == 2
    switchable = {"not_a_question", "repetitive"}
    first = read_jsonl(rejects_path(first_run["out"]))
    fixed = Counter(
        r["reason"] for r in first if r["score"] is None and r["reason"] not in switchable
    )
    embedded = 2 - sum(fixed.values())
    assert embedded >= 1, "no sample reached the coherence filter: the test would prove nothing"
    assert strict["rejected_by_reason"] == {**fixed, "incoherent": embedded}
    assert [r["provenance"]["kind"] for r in read_jsonl(out)] == ["source", "source"]
    for reject in read_jsonl(rejects_path(out)):
        if reject["reason"] == "incoherent":
            assert 0 <= abs(reject["score"]) < 0.99
            assert reject["record"]["provenance"]["coherence"] == reject["score"]


def test_a_killed_run_resumes_with_the_same_seeded_samples(
    first_run: dict[str, Any], loaded: list[CountingGenerator], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    lines = partial_path(first_run["out"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3  # the header and two attempts
    # killed while writing the second attempt: half a line
    partial_path(out).write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    with one_core():
        summary = augment(first_run["source"], out, *GENERATE, "--min-coherence", str(COHERENCE))
    assert [g.calls for g in loaded] == [2] and summary["reused"] == 1
    again = partial_path(out).read_text(encoding="utf-8").splitlines()
    assert json.loads(again[2]) == json.loads(lines[2])  # same seed, same sample
    assert out.read_bytes() == first_run["out"].read_bytes()


def test_near_duplicates_echoes_and_short_replies_are_rejected(tmp_path: Path) -> None:
    """A partial file written by hand stands for the generator: the filters run for real."""
    from hwkit.plugins.data.augment import _row_hash, source_examples

    src = persona_rows(1)[0]
    source = write_jsonl(tmp_path / "src.jsonl", [src])
    out = tmp_path / "out.jsonl"
    settings = AugmentSettings(model=MODEL, max_new_tokens=32, per_row=7, seed=0)
    _, examples = source_examples(DataConfig(source=str(source)))
    good = (
        "What did your father mean about the wheel?",
        "He meant that a wheel shows you what is wrong with it if you are patient and quiet, "
        "and I have listened to people that way ever since.",
    )
    entries = [
        ("followup", 0, *good),
        ("continuation", 0, "That is lovely, thank you for sharing.", src["answer"] + " Yes."),
        ("followup", 1, *good),  # the same text again
        ("continuation", 1, "Did he teach you more?", "He said a wheel tells you."),
        ("followup", 2, "Why?", "Because a wheel tells you what is wrong, always."),
        (
            "continuation",
            2,
            "Do you still fix wheels for the neighbours?",
            "I fix them every Saturday morning. I fix them every Saturday morning, and the "
            "children bring their bikes. I fix them every Saturday morning.",
        ),
        ("followup", 3, "Tell me about the wheel.", "It was a wooden wheel from the old mill."),
    ]
    lines = [{"augment_partial": settings.fingerprint()}]
    for kind, attempt, user, reply in entries:
        lines.append(
            {
                "source_row": 0,
                "kind": kind,
                "attempt": attempt,
                "seed": 1,
                "source_hash": _row_hash(examples[0].row),
                "user": user,
                "reply": reply,
                "truncated": False,
                "error": None,
            }
        )
    write_jsonl(partial_path(out), lines)
    filters = [*GENERATE[:4], "--per-row", "7", "--min-coherence", "0.3"]
    summary = augment(source, out, *filters)
    assert summary["generator_calls"] == 0 and summary["kept"] == 1
    assert summary["rejected_by_reason"] == {
        "echo": 1,
        "near_duplicate": 2,
        "not_a_question": 1,
        "repetitive": 1,
        "too_short": 1,
    }
    reasons = {(r["kind"], r["attempt"]): r for r in read_jsonl(rejects_path(out))}
    copy = reasons[("continuation", 0)]
    assert copy["reason"] == "near_duplicate" and "source row 0" in copy["detail"]
    repeat = reasons[("followup", 1)]
    assert repeat["reason"] == "near_duplicate" and repeat["score"] == pytest.approx(1.0, abs=1e-3)
    assert "kept followup of row 0" in repeat["detail"]
    assert reasons[("continuation", 1)]["reason"] == "echo"
    assert reasons[("followup", 2)]["reason"] == "too_short"
    repetitive = reasons[("continuation", 2)]
    assert repetitive["reason"] == "repetitive" and "--max-repetition 0.15" in repetitive["detail"]
    assert reasons[("followup", 3)]["reason"] == "not_a_question"
    # with either filter off, its attempt reaches the embedding filters
    for switch, reason, attempt in (
        (["--max-repetition", "1"], "repetitive", ("continuation", 2)),
        (["--allow-statements"], "not_a_question", ("followup", 3)),
    ):
        off = augment(source, out, *filters, *switch)
        assert reason not in off["rejected_by_reason"]
        assert off["kept"] + off["rejected"] == 7
        now = {(r["kind"], r["attempt"]): r for r in read_jsonl(rejects_path(out))}
        kept = {(r["provenance"]["kind"], r["provenance"].get("attempt")) for r in read_jsonl(out)}
        assert attempt in kept or now[attempt]["reason"] in ("incoherent", "near_duplicate")


def test_repetition_is_the_share_of_characters_in_repeated_5_grams() -> None:
    from hwkit.plugins.data.augment import repetition

    assert repetition("a wheel tells you what is wrong if you listen") == 0.0
    assert repetition("one two three four five") == 0.0  # too short to repeat
    twice = "I fix them every day. I fix them every day."
    assert repetition(twice) == 1.0  # case and punctuation aside, all of it twice
    # one repeated 5-gram in a longer text: its words' characters over all characters
    text = "the old mill wheel turned slowly while the old mill wheel turned and we watched"
    words = text.split()
    repeated = sum(len(w) for w in words[:5]) * 2
    assert repetition(text) == pytest.approx(repeated / sum(len(w) for w in words))


@pytest.mark.parametrize(
    ("rows", "args", "error", "words"),
    [
        ([], [], ConfigError, ["no rows"]),
        ([{"question": "Why?", "answer": ""}], [], ConfigError, ["line 1", "'answer'", "empty"]),
        (None, ["--kinds", "followup,rephrase"], UsageError, ["--kinds", "'rephrase'"]),
        (None, ["--min-coherence", "1.5"], UsageError, ["--min-coherence", "[0, 1]"]),
        (None, ["--near-duplicate", "-0.1"], UsageError, ["--near-duplicate", "[0, 1]"]),
        (None, ["--max-repetition", "1.5"], UsageError, ["--max-repetition", "[0, 1]"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path,
    rows: list[dict[str, Any]] | None,
    args: list[str],
    error: type[HwkitError],
    words: list[str],
) -> None:
    source = write_jsonl(tmp_path / "src.jsonl", persona_rows(2) if rows is None else rows)
    result = runner.invoke(
        app, ["data", "augment", str(source), "--out", str(tmp_path / "out.jsonl"), *args]
    )
    assert isinstance(result.exception, error), result.output
    line = result.exception.one_line()
    assert "\n" not in line and all(w in line for w in words), line
    assert result.exception.exit_code in (2, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jsonl"]


def test_a_partial_made_with_other_settings_is_refused(
    first_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    shutil.copy(partial_path(first_run["out"]), partial_path(out))
    args = [*GENERATE, "--temperature", "0.5"]
    result = runner.invoke(
        app, ["data", "augment", str(first_run["source"]), "--out", str(out), *args]
    )
    assert isinstance(result.exception, UsageError)
    assert "temperature 0.8" in str(result.exception) and not out.exists()


def test_summary_counts_add_up(first_run: dict[str, Any]) -> None:
    s = first_run["summary"]
    assert sum(s["kept_by_kind"].values()) == s["kept"]
    assert sum(s["rejected_by_reason"].values()) == s["rejected"]
    assert np.isfinite(s["seconds"]) and s["settings"]["per_row"] == 2
