"""Bad input to ``hwkit train``: one line naming the field / path / data, a documented exit
code, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hwkit.errors import EXIT_CONFIG, EXIT_NOT_FOUND


def _hwkit(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    from hwkit.cli import main

    monkeypatch.setattr(sys, "argv", ["hwkit", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    # log lines (JSON) may precede it; the error itself is exactly one line
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return int(exit_info.value.code or 0), errors[0]


def test_field_of_the_wrong_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('max_steps = "ten"\nlearning_rate = 1e-4\n')
    code, err = _hwkit(["train", "sft", str(config)], monkeypatch, capsys)
    assert code == EXIT_CONFIG
    assert err.count("\n") == 0 and "Traceback" not in err
    assert str(config) in err and "'max_steps'" in err and "'ten'" in err


def test_unknown_field_and_nested_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[data]\nsource = "x.jsonl"\nvalidation_fraction = "half"\n')
    code, err = _hwkit(["train", "dpo", str(config)], monkeypatch, capsys)
    assert code == EXIT_CONFIG and "'data.validation_fraction'" in err


def test_model_path_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "sft.toml"
    missing = tmp_path / "models" / "nope"
    config.write_text(f'model = "{missing}"\n')
    code, err = _hwkit(
        ["train", "sft", str(config), "--out", str(tmp_path / "run")], monkeypatch, capsys
    )
    assert code == EXIT_NOT_FOUND
    assert str(missing) in err and err.count("\n") == 0


def test_empty_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = tmp_path / "sft.toml"
    config.write_text('[data]\nsource = "empty.jsonl"\n')
    code, err = _hwkit(
        ["train", "sft", str(config), "--out", str(tmp_path / "run")], monkeypatch, capsys
    )
    assert code == EXIT_CONFIG, err
    assert str(empty) in err and err.count("\n") == 0


def test_unknown_trainer_lists_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "x.toml"
    config.write_text("")
    code, err = _hwkit(["train", "nosuch", str(config)], monkeypatch, capsys)
    assert code == EXIT_NOT_FOUND and "sft" in err and "dpo" in err


def test_missing_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _hwkit(["train", "sft", str(tmp_path / "none.toml")], monkeypatch, capsys)
    assert code == EXIT_NOT_FOUND and "none.toml" in err
