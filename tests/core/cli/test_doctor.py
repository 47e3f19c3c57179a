"""`hwkit doctor`, `hwkit --help` and the one-line error contract, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import run_hwkit


def test_doctor_on_this_machine() -> None:
    result = run_hwkit("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    backends = {b["name"]: b for b in report["backends"]}
    assert backends["cpu"]["available"]
    cpu = backends["cpu"]["devices"][0]
    assert cpu["id"] == "cpu:0" and cpu["memory"]["total"] > 0
    for name in ("cuda", "xpu", "npu"):
        assert name in backends, f"built-in backend {name} is not registered"
        if not backends[name]["available"]:
            assert len(backends[name]["reason"]) > 10, backends[name]
    assert report["profile"]["present"] is True
    assert report["plugin_errors"] == [], report["plugin_errors"]


def test_doctor_with_an_absent_profile() -> None:
    result = run_hwkit("doctor", "--json", HWKIT_PROFILE="h200")
    assert result.returncode == 0, result.stderr
    profile = json.loads(result.stdout)["profile"]
    assert profile["name"] == "h200"
    assert profile["memory_gb"] == pytest.approx(141)
    assert profile["present"] is False
    assert "not present" in profile["reason"]


def test_doctor_human_output_says_not_present() -> None:
    result = run_hwkit("doctor", HWKIT_PROFILE="h200", COLUMNS="200")
    assert result.returncode == 0, result.stderr
    assert "NOT PRESENT" in result.stdout
    assert "141.0 GB" in result.stdout


def test_unknown_profile_lists_known_names() -> None:
    result = run_hwkit("doctor", HWKIT_PROFILE="h900")
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert "h900" in line and "h200" in line and "cpu" in line


def test_malformed_profile_file_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "mine.toml"
    bad.write_text(
        'name = "mine"\ndisplay_name = "Mine"\nsource = "me"\n[match]\nkind = "cuda"\n'
        '[memory]\ncapacity_gb = "lots"\n[compute]\nnative_dtypes = ["float32"]\n',
        encoding="utf-8",
    )
    result = run_hwkit("doctor", HWKIT_PROFILE=str(bad))
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert str(bad) in result.stderr and "memory.capacity_gb" in result.stderr


def test_help_is_light() -> None:
    code = (
        "import sys\nfrom hwkit.cli import app\n"
        "heavy = [m for m in ('torch', 'transformers', 'openvino', 'trl', 'peft')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = run_hwkit("--help")
    assert result.returncode == 0
    for command in ("doctor", "profiles", "plugins"):
        assert command in result.stdout
