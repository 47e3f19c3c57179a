"""Confidence filter, exact and near dedupe, the seeded grouped split, readiness thresholds,
and the accounting rule: rows in = kept + rejected, always."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwkit.plugins.data import DataConfig, ReadinessThresholds, prepare
from hwkit.plugins.data.samples import persona_sample_path


def _jsonl(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _persona() -> list[dict[str, object]]:
    with persona_sample_path().open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_confidence_threshold_rejects_low_and_non_numeric(tmp_path: Path) -> None:
    rows = [
        {"question": f"q{i}?", "answer": f"a{i}", "confidence": c}
        for i, c in enumerate([0.9, 0.5, "0.8", "high", None, 0.7])
    ]
    data = prepare(
        DataConfig(
            source=_jsonl(tmp_path / "r.jsonl", rows), min_confidence=0.7, validation_fraction=0
        )
    )
    assert [m["messages"][0]["content"] for m in data.train] == ["q0?", "q2?", "q5?"]
    assert [(r["line"], r["reason"]) for r in data.rejects] == [
        (2, "low_confidence"),
        (4, "bad_confidence"),
        (5, "bad_confidence"),
    ]
    assert "0.5 < min_confidence 0.7" in data.rejects[0]["detail"]


def test_exact_dedupe_ignores_case_spacing_and_punctuation(tmp_path: Path) -> None:
    rows = [
        {"question": "What is a hub?", "answer": "The centre of the wheel."},
        {"question": "what is a hub", "answer": "The  centre of the wheel"},
        {"question": "What is a hub?", "answer": "The middle part."},
    ]
    src = _jsonl(tmp_path / "r.jsonl", rows)
    data = prepare(DataConfig(source=src, validation_fraction=0))
    assert len(data.train) == 2
    assert data.rejects[0]["reason"] == "duplicate" and data.rejects[0]["line"] == 2
    assert "line 1" in data.rejects[0]["detail"]
    kept_all = prepare(DataConfig(source=src, dedupe="none", validation_fraction=0))
    assert len(kept_all.train) == 3 and kept_all.rejects == []


def test_near_dedupe_catches_small_edits_only(tmp_path: Path) -> None:
    persona = _persona()[:12]
    rows: list[dict[str, object]] = [dict(r) for r in persona]
    edited = dict(persona[0])
    edited["answer"] = str(edited["answer"]).replace("four", "five").replace("slowly", "slow")
    rows.append(edited)
    other = dict(persona[1])
    other["answer"] = "A completely different answer about ferries and rivers and caps."
    rows.append(other)
    src = _jsonl(tmp_path / "r.jsonl", rows)
    exact = prepare(DataConfig(source=src, dedupe="exact", validation_fraction=0))
    assert exact.rejects == []
    near = prepare(DataConfig(source=src, dedupe="near", validation_fraction=0))
    assert [(r["line"], r["reason"]) for r in near.rejects] == [(13, "near_duplicate")]
    assert "with line 1" in near.rejects[0]["detail"]
    assert len(near.train) == 13


def test_split_is_seeded_deterministic_and_grouped(tmp_path: Path) -> None:
    rows = _persona()
    # a repeated question with different answers must stay on one side of the split
    rows += [
        {
            "question": rows[0]["question"],
            "answer": f"Another take, number {i}.",
            "category": "extra",
        }
        for i in range(5)
    ]
    src = _jsonl(tmp_path / "r.jsonl", rows)
    a = prepare(DataConfig(source=src, seed=7, validation_fraction=0.2))
    b = prepare(DataConfig(source=src, seed=7, validation_fraction=0.2))
    c = prepare(DataConfig(source=src, seed=8, validation_fraction=0.2))
    assert a.train == b.train and a.validation == b.validation
    assert a.validation != c.validation
    assert abs(len(a.validation) - round(0.2 * len(rows))) <= 3
    q0 = rows[0]["question"]
    sides = {
        "train" if any(m["messages"][0]["content"] == q0 for m in a.train) else "",
        "val" if any(m["messages"][0]["content"] == q0 for m in a.validation) else "",
    }
    assert sides in ({"train", ""}, {"val", ""})


def test_readiness_thresholds(tmp_path: Path) -> None:
    persona = _persona()
    ready = prepare(DataConfig(source=str(persona_sample_path())))
    assert ready.report.ready and ready.report.unmet() == []
    assert ready.report.answers == len(persona)
    assert ready.report.total_words == sum(len(str(r["answer"]).split()) for r in persona)
    small = _jsonl(tmp_path / "small.jsonl", persona[:10])
    report = prepare(DataConfig(source=small)).report
    assert not report.ready
    # ten answers of ~60 words from two categories: long enough, but too few of them
    assert report.categories == {"childhood": 9, "work": 1}
    assert {c.name for c in report.unmet()} == {"answers", "categories", "total words"}
    relaxed = prepare(
        DataConfig(
            source=small,
            thresholds=ReadinessThresholds(min_answers=10, min_total_words=500, min_categories=2),
        )
    ).report
    assert relaxed.ready
    one_cat = _jsonl(tmp_path / "one.jsonl", [r for r in persona if r["category"] == "work"])
    lax = {"min_answers": 1, "min_total_words": 1}
    cats = prepare(DataConfig(source=one_cat, thresholds=lax)).report
    assert [c.name for c in cats.unmet()] == ["categories"]
    assert cats.categories == {"work": 10}


LINE = st.one_of(
    st.fixed_dictionaries({"question": st.text(max_size=12), "answer": st.text(max_size=12)}),
    st.fixed_dictionaries(
        {"question": st.sampled_from(["same?", "Same"]), "answer": st.sampled_from(["x", "X.", ""])}
    ),
    st.dictionaries(
        st.sampled_from(["question", "answer", "other"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=5)),
        max_size=3,
    ),
    st.just("{broken"),
    st.just("[]"),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(LINE, min_size=1, max_size=25), dedupe=st.sampled_from(["exact", "none"]))
def test_nothing_is_dropped_silently(tmp_path: Path, lines: list[object], dedupe: str) -> None:
    text = [x if isinstance(x, str) else json.dumps(x) for x in lines]
    if not any(isinstance(x, dict) and "question" in x and "answer" in x for x in lines):
        text.append(json.dumps({"question": "anchor?", "answer": "anchor"}))
    src = tmp_path / "h.jsonl"
    src.write_text("\n".join(text) + "\n", encoding="utf-8")
    data = prepare(DataConfig(source=str(src), dedupe=dedupe))  # type: ignore[arg-type]
    r = data.report
    assert r.rows_in == len(text) == r.rows_kept + r.rows_rejected
    assert r.rows_kept == len(data.train) + len(data.validation)
    assert len({row["line"] for row in data.rejects}) == len(data.rejects)
