"""Mappings to chat messages: auto-detected columns, messages columns, templates, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit.errors import ConfigError
from hwkit.plugins.data import DataConfig, prepare


def _jsonl(tmp_path: Path, rows: list[dict[str, object]], name: str = "rows.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("user_col", "answer_col"),
    [
        ("question", "answer"),
        ("prompt", "response"),
        ("prompt", "completion"),
        ("Instruction", "Output"),
        ("query", "reply"),
    ],
)
def test_common_column_names_are_detected(tmp_path: Path, user_col: str, answer_col: str) -> None:
    src = _jsonl(tmp_path, [{"id": 1, user_col: "Why ride?", answer_col: "Because it is fun."}])
    data = prepare(DataConfig(source=src, validation_fraction=0, system_prompt="Be Tomas."))
    assert data.train == [
        {
            "messages": [
                {"role": "system", "content": "Be Tomas."},
                {"role": "user", "content": "Why ride?"},
                {"role": "assistant", "content": "Because it is fun."},
            ]
        }
    ]


def test_explicit_mapping_and_per_row_system_column(tmp_path: Path) -> None:
    rows = [{"ask": "Hi?", "say": "Hello.", "persona": "You are terse.", "answer": "decoy"}]
    data = prepare(
        DataConfig(
            source=_jsonl(tmp_path, rows),
            validation_fraction=0,
            system_prompt="default persona",
            mapping={"user": "ask", "assistant": "say", "system": "persona"},
        )
    )
    assert [m["content"] for m in data.train[0]["messages"]] == ["You are terse.", "Hi?", "Hello."]


def test_messages_column_openai_and_sharegpt(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "a?"}, {"role": "assistant", "content": "b"}]},
        {
            "messages": [
                {"from": "human", "value": "c?"},
                {"from": "gpt", "value": "d"},
                {"from": "human", "value": "e?"},
                {"from": "gpt", "value": "f"},
            ]
        },
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "g?"}, {"role": "assistant", "content": " "}]},
    ]
    data = prepare(
        DataConfig(source=_jsonl(tmp_path, rows), validation_fraction=0, system_prompt="S")
    )
    assert data.train[0]["messages"][0] == {"role": "system", "content": "S"}
    assert [m["role"] for m in data.train[1]["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert [(r["line"], r["reason"]) for r in data.rejects] == [
        (3, "bad_messages"),
        (4, "bad_messages"),
        (5, "empty_answer"),
    ]


def test_csv_numbers_become_json_numbers_in_a_multi_column_target(tmp_path: Path) -> None:
    """A CSV holds text: the scorer's "0.99" must come out as the number 0.99, while text
    that only looks numeric ("007") stays text."""
    csv = tmp_path / "profiles.csv"
    csv.write_text(
        "handle,bio,score,reason,n\n"
        "bond,Agent.,0.99,Academic title,007\n"
        "ada,Compilers.,1,Papers,12\n",
        encoding="utf-8",
    )
    data = prepare(
        DataConfig(
            source=str(csv),
            validation_fraction=0,
            template="Score {handle}: {bio}",
            mapping={"target": ["handle", "score", "reason", "n"]},
            thresholds={"min_answers": 1, "min_categories": 0, "min_total_words": 0},
        )
    )
    answers = [json.loads(row["messages"][-1]["content"]) for row in data.train]
    assert answers == [
        {"handle": "bond", "score": 0.99, "reason": "Academic title", "n": "007"},
        {"handle": "ada", "score": 1, "reason": "Papers", "n": 12},
    ]


def test_template_renders_columns_and_json_target(tmp_path: Path) -> None:
    rows = [
        {"name": "Ada", "bio": "Compilers, 10 years", "result": {"score": 9, "why": "deep"}},
        {"name": "Bo", "bio": "Junior.", "result": '{"score": 3, "why": "new"}'},
        {"name": "Cy", "bio": "Unknown.", "result": None},
    ]
    data = prepare(
        DataConfig(
            source=_jsonl(tmp_path, rows),
            validation_fraction=0,
            template="Score this profile. Name: {name}. Bio: {bio}. Return JSON {{score, why}}.",
            mapping={"target": "result"},
        )
    )
    user, answer = data.train[0]["messages"]
    assert user["content"] == (
        "Score this profile. Name: Ada. Bio: Compilers, 10 years. Return JSON {score, why}."
    )
    assert json.loads(answer["content"]) == {"score": 9, "why": "deep"}
    assert json.loads(data.train[1]["messages"][1]["content"]) == {"score": 3, "why": "new"}
    assert [(r["line"], r["reason"]) for r in data.rejects] == [(3, "empty_answer")]


def test_missing_columns_are_one_line_config_errors(tmp_path: Path) -> None:
    src = _jsonl(tmp_path, [{"question": "q?", "answer": "a", "category": "c"}])
    with pytest.raises(ConfigError) as info:
        prepare(DataConfig(source=src, mapping={"assistant": "reply"}))
    line = info.value.one_line()
    assert "'reply'" in line and "mapping.assistant" in line
    assert "available columns: question, answer, category" in line and "\n" not in line
    with pytest.raises(ConfigError, match=r"placeholder \{bio\} is not a column.*question"):
        prepare(DataConfig(source=src, template="Rate {bio}", mapping={"target": "answer"}))
    other = _jsonl(tmp_path, [{"title": "t", "body": "b"}], "other.jsonl")
    with pytest.raises(ConfigError, match=r"no user/instruction column.*title, body"):
        prepare(DataConfig(source=other))


def test_rows_missing_a_field_or_with_empty_answers_are_rejected(tmp_path: Path) -> None:
    rows = [
        {"question": "q1?", "answer": "fine answer"},
        {"question": "q2?"},
        {"question": "q3?", "answer": "   "},
        {"question": "", "answer": "orphan"},
        {"question": "q5?", "answer": None},
    ]
    data = prepare(DataConfig(source=_jsonl(tmp_path, rows), validation_fraction=0))
    assert len(data.train) == 1
    assert [(r["line"], r["reason"]) for r in data.rejects] == [
        (2, "missing_field"),
        (3, "empty_answer"),
        (4, "empty_prompt"),
        (5, "empty_answer"),
    ]
    assert data.rejects[1]["record"] == {"question": "q3?", "answer": "   "}


def test_kept_columns_ride_on_each_row_typed_for_rewards(shared_data: Path) -> None:
    """mapping.keep copies source columns onto every row (numbers as numbers, dates as text,
    empty cells as None), for GRPO rewards that read them; a missing one is named."""
    import csv

    cfg = DataConfig(
        source=str(shared_data / "profiles" / "profiles.csv"),
        template="Score {username}: {bio}",
        mapping={"target": ["score"], "keep": ["score", "follower_count", "created_at", "bio"]},
        validation_fraction=0.0,
    )
    rows = prepare(cfg).train
    with (shared_data / "profiles" / "profiles.csv").open(newline="", encoding="utf-8") as fh:
        first = next(csv.DictReader(fh))
    kept = rows[0]["columns"]
    assert kept["score"] == float(first["score"]) and kept["created_at"] == first["created_at"]
    assert kept["follower_count"] == int(first["follower_count"])
    assert kept["bio"] == (first["bio"] or None)
    assert all(set(r["columns"]) == {"score", "follower_count", "created_at", "bio"} for r in rows)
    json.dumps(rows)  # the prepared rows still write as JSON lines
    with pytest.raises(ConfigError, match=r"'likes' \(mapping.keep\) not found.*follower_count"):
        prepare(
            cfg.model_copy(update={"mapping": cfg.mapping.model_copy(update={"keep": ["likes"]})})
        )


def test_kept_columns_may_not_take_a_rows_own_keys_or_apply_to_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'reference' is a key of the prepared row"):
        DataConfig(source="x.jsonl", mapping={"keep": ["reference"]})
    with pytest.raises(ValueError, match="named twice"):
        DataConfig(source="x.jsonl", mapping={"keep": ["a", "a"]})
    src = _jsonl(tmp_path, [{"prompt": "p", "chosen": "c", "rejected": "r", "score": 1}])
    with pytest.raises(ConfigError, match=r"mapping\.keep applies to sft rows"):
        prepare(DataConfig(source=src, kind="preference", mapping={"keep": ["score"]}))
