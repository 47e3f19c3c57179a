"""``hwkit train --profile NAME`` plans for NAME through the runtime, never by writing
``HWKIT_PROFILE`` into the process environment; the torchrun relaunch carries the profile
on its command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import EXIT_UNAVAILABLE
from hwkit.runtime import set_current
from hwkit.testing import mock_runtime


def _hwkit(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    from hwkit.cli import main

    monkeypatch.setattr(sys, "argv", ["hwkit", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "sft.toml"
    config.write_text("max_seq_len = 48\neffective_batch = 2\nlora_rank = 4\n", encoding="utf-8")
    return config


def test_profile_option_plans_for_it_without_touching_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A machine with one CPU (mock hardware); --profile rtx5090 plans for a GPU it lacks.
    set_current(mock_runtime("cpu"))
    before = dict(os.environ)
    argv = ["train", "sft", str(_config(tmp_path)), "--profile", "rtx5090"]
    code, err = _hwkit([*argv, "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert dict(os.environ) == before and "HWKIT_PROFILE" not in os.environ
    assert code == EXIT_UNAVAILABLE, err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "(profile rtx5090)" in line and "not in this machine" in line
    # Nothing was trained or planned into the run directory for the wrong hardware.
    assert not (tmp_path / "run" / "plan.json").exists()


def test_torchrun_relaunch_passes_the_profile_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launched: list[tuple[list[str], dict[str, str]]] = []

    def fake_call(cmd: list[str], env: dict[str, str], **_: Any) -> int:
        launched.append((cmd, env))
        return 0

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(subprocess, "call", fake_call)
    before = dict(os.environ)
    config = _config(tmp_path)
    argv = ["train", "sft", str(config), "--nproc", "2", "--profile", "rtx5090", "--resume"]
    code, err = _hwkit(argv, monkeypatch, capsys)
    assert code == 0, err
    assert dict(os.environ) == before
    ((cmd, env),) = launched
    assert cmd[cmd.index("--profile") + 1] == "rtx5090"
    assert "--nproc_per_node=2" in cmd and "--resume" in cmd and str(config) in cmd
    assert "HWKIT_PROFILE" not in env
