"""Preference pairs from feedback: thumbs, A/B, corrections, star ratings, chosen/rejected
records and the real Anthropic HH-RLHF test split."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hwkit.errors import ConfigError
from hwkit.plugins.data import DataConfig, prepare
from hwkit.plugins.data.transcripts import parse_transcript


def _jsonl(tmp_path: Path, rows: list[dict[str, object]]) -> str:
    path = tmp_path / "feedback.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _pref(src: str, **kw: object) -> object:
    return prepare(DataConfig(source=src, kind="preference", validation_fraction=0, **kw))


def _pairs(data: object) -> set[tuple[str, str, str]]:
    return {
        (r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in data.train
    }  # type: ignore[attr-defined]


def test_thumbs_pair_down_with_up_for_the_same_prompt(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Fix a flat?", "response": "Patch the tube.", "thumbs": "up"},
        {"prompt": "fix a flat", "response": "Buy a new bike.", "thumbs": "down"},
        {"prompt": "Fix a flat?", "response": "Call someone.", "thumbs": -1},
        {"prompt": "Oil a chain?", "response": "Every 300 km.", "thumbs": True},
        {"prompt": "Tire pressure?", "response": "Whatever.", "thumbs": "meh"},
    ]
    data = _pref(_jsonl(tmp_path, rows))
    assert _pairs(data) == {
        ("Fix a flat?", "Patch the tube.", "Buy a new bike."),
        ("Fix a flat?", "Patch the tube.", "Call someone."),
    }
    assert [(r["line"], r["reason"]) for r in data.rejects] == [  # type: ignore[attr-defined]
        (4, "unpaired"),
        (5, "bad_label"),
    ]
    assert data.report.rows_kept == 3  # type: ignore[attr-defined]


def test_ab_comparisons_picked_is_chosen(tmp_path: Path) -> None:
    rows = [
        {"prompt": "P1", "response_a": "A1", "response_b": "B1", "choice": "a"},
        {"prompt": "P2", "response_a": "A2", "response_b": "B2", "choice": "B"},
        {"prompt": "P3", "response_a": "A3", "response_b": "B3", "choice": "tie"},
        {"prompt": "P4", "response_a": "A4", "response_b": "B4", "choice": "maybe"},
    ]
    data = _pref(_jsonl(tmp_path, rows))
    assert _pairs(data) == {("P1", "A1", "B1"), ("P2", "B2", "A2")}
    assert [r["reason"] for r in data.rejects] == ["tie", "bad_label"]  # type: ignore[attr-defined]


def test_corrections_corrected_text_is_chosen(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Capital of Peru?", "response": "Quito.", "corrected": "Lima."},
        {"prompt": "2+2?", "response": "4", "corrected": "4"},
    ]
    data = _pref(_jsonl(tmp_path, rows), feedback="correction")
    assert _pairs(data) == {("Capital of Peru?", "Lima.", "Quito.")}
    assert [r["reason"] for r in data.rejects] == ["identical_pair"]  # type: ignore[attr-defined]


def test_star_ratings_pair_across_the_gap(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Q", "response": "five", "rating": 5},
        {"prompt": "Q", "response": "four", "rating": 4},
        {"prompt": "Q", "response": "two", "rating": "2"},
        {"prompt": "Q", "response": "one", "rating": 1},
        {"prompt": "R", "response": "r3", "rating": 3},
        {"prompt": "R", "response": "r4", "rating": 4},
    ]
    data = _pref(_jsonl(tmp_path, rows))
    assert _pairs(data) == {
        ("Q", "five", "two"),
        ("Q", "five", "one"),
        ("Q", "four", "two"),
        ("Q", "four", "one"),
    }
    assert [(r["line"], r["reason"]) for r in data.rejects] == [  # type: ignore[attr-defined]
        (5, "unpaired"),
        (6, "unpaired"),
    ]
    wide = _pref(_jsonl(tmp_path, rows), min_rating_gap=4)
    assert _pairs(wide) == {("Q", "five", "one")}
    assert wide.report.rows_in == wide.report.rows_kept + wide.report.rows_rejected  # type: ignore[attr-defined]


def test_mixed_feedback_kinds_in_one_table(tmp_path: Path) -> None:
    rows = [
        {"prompt": "P", "chosen": "good", "rejected": "bad"},
        {"prompt": "Q", "response": "old", "corrected": "new"},
        {"prompt": "R", "response_a": "x", "response_b": "y", "choice": "b"},
        {"prompt": "S", "note": "no feedback fields"},
    ]
    data = _pref(_jsonl(tmp_path, rows))
    assert _pairs(data) == {("P", "good", "bad"), ("Q", "new", "old"), ("R", "y", "x")}
    assert [r["reason"] for r in data.rejects] == ["unknown_feedback"]  # type: ignore[attr-defined]


def test_message_list_pairs_and_system_prompt(tmp_path: Path) -> None:
    conv = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Joke?"},
    ]
    rows = [
        {
            "chosen": [*conv, {"role": "assistant", "content": "A good one."}],
            "rejected": [*conv, {"role": "assistant", "content": "No."}],
        }
    ]
    data = _pref(_jsonl(tmp_path, rows), system_prompt="Be kind.")
    row = data.train[0]  # type: ignore[attr-defined]
    assert row["prompt"] == [{"role": "system", "content": "Be kind."}, *conv]
    assert row["chosen"] == [{"role": "assistant", "content": "A good one."}]
    assert row["rejected"] == [{"role": "assistant", "content": "No."}]


def test_no_preference_columns_is_a_config_error(tmp_path: Path) -> None:
    src = _jsonl(tmp_path, [{"question": "q", "answer": "a"}])
    with pytest.raises(ConfigError, match=r"no preference columns.*question, answer"):
        _pref(src)
    needs = r"thumbs feedback needs a thumbs column.*question, answer.*mapping\.thumbs"
    with pytest.raises(ConfigError, match=needs):
        _pref(src, feedback="thumbs")
    pairs = _jsonl(tmp_path, [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    with pytest.raises(ConfigError, match=r"kind is sft.*kind = \"preference\""):
        prepare(DataConfig(source=pairs))


def test_hh_transcript_parsing() -> None:
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nMulti para.\n\nHuman: Bye\n\nAssistant: "
    assert parse_transcript(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!\n\nMulti para."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": ""},
    ]


def test_real_hh_rlhf_helpful_base(shared_data: Path) -> None:
    path = shared_data / "preference" / "hh-rlhf" / "helpful-base_test.jsonl.gz"
    data = prepare(DataConfig(source=str(path), kind="preference", dedupe="none"))
    report = data.report
    assert report.rows_in == 2354
    assert report.rejected_by_reason == {"identical_pair": 2}
    assert report.rows_kept == 2352 == report.train + report.validation
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh]
    same = [i + 1 for i, r in enumerate(raw) if r["chosen"] == r["rejected"]]
    assert sorted(r["line"] for r in data.rejects) == same
    rows = data.train + data.validation
    for row in rows:
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == "assistant" == row["rejected"][0]["role"]
        assert row["chosen"] != row["rejected"]
    # a single-turn record: the prompt is the Human turn, the completions the last turns
    first = raw[0]
    row = next(
        r
        for r in rows
        if len(r["prompt"]) == len(parse_transcript(first["chosen"])) - 1
        and r["prompt"] == parse_transcript(first["chosen"])[:-1]
    )
    assert row["chosen"][-1]["content"] == parse_transcript(first["chosen"])[-1]["content"]
    assert row["rejected"][-1]["content"] == parse_transcript(first["rejected"])[-1]["content"]
    # validation holds whole prompt groups: no prompt is on both sides of the split
    train_prompts = {json.dumps(r["prompt"]) for r in data.train}
    assert not train_prompts & {json.dumps(r["prompt"]) for r in data.validation}
