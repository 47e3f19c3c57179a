"""``hwkit export KIND``: any registered exporter, only the options the user gave, checked
against the exporter's ``options_model``; a third party's exporter installed as a package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import EXIT_USAGE, UsageError
from hwkit.plugins.exporters.cli import export_options
from tests.cli import run_hwkit
from tests.fake_dist import make_distribution

ECHO = """
import json
from pathlib import Path

from hwkit.exporter import Exporter, ExportOptions
from hwkit.hookspecs import hookimpl


class EchoOptions(ExportOptions):
    flavour: str = "plain"
    repeat: int = 1


class EchoExporter(Exporter):
    name = "echo"
    description = "writes down what it was given"
    options_model = EchoOptions

    def export(self, source, output, **options):
        parsed = EchoOptions(**options)
        output.mkdir(parents=True, exist_ok=True)
        artefact = output / "echo.json"
        artefact.write_text(json.dumps(
            {"source": str(source), "options": options, "parsed": parsed.model_dump()}
        ))
        (output / "export.json").write_text(json.dumps(
            {"echo.json": {"verified": parsed.verify, "repeat": parsed.repeat}}
        ))
        return artefact


@hookimpl
def hwkit_register_exporters(register):
    register(EchoExporter)
"""


@pytest.fixture(scope="module")
def echo_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    return make_distribution(root, "hwkit-echo", {"hwkit_echo": ECHO}, {"echo": "hwkit_echo"})


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_help_lists_the_registered_exporters(echo_dist: Path) -> None:
    proc = run_hwkit("export", "--help", pythonpath=echo_dist, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.replace("│", " ").split())  # rich draws a panel
    assert "a registered exporter: echo, gguf, merged, ollama, openvino" in text


def test_a_third_party_exporter_receives_the_options_given(echo_dist: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_hwkit(
        "export",
        "echo",
        "some-model",
        "--out",
        str(out),
        "--option",
        "flavour=spicy",
        "--option",
        "repeat=3",
        "--no-verify",
        "--json",
        pythonpath=echo_dist,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((out / "echo.json").read_text())
    # only what was given, typed by the exporter's options model
    assert written["options"] == {"flavour": "spicy", "repeat": 3, "verify": False}
    assert written["source"] == "some-model"
    printed = json.loads(proc.stdout)
    assert printed == {"path": str(out / "echo.json"), "figures": {"verified": False, "repeat": 3}}


def test_options_not_given_are_not_passed(echo_dist: Path, tmp_path: Path) -> None:
    proc = run_hwkit(
        "export", "echo", "m", "--out", str(tmp_path), "--json", pythonpath=echo_dist, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "echo.json").read_text())
    assert written["options"] == {}
    assert written["parsed"] == {"verify": True, "flavour": "plain", "repeat": 1}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--quant", "f16"], "the echo exporter does not take --quant"),
        (["--option", "colour=red"], "the echo exporter does not take --option colour"),
        (["--option", "repeat=many"], "echo --option repeat: Input should be a valid integer"),
        (["--option", "repeat"], "--option 'repeat': expected KEY=VALUE"),
    ],
)
def test_options_an_exporter_does_not_take_are_one_line_usage_errors(
    echo_dist: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    out = tmp_path / "out"
    proc = run_hwkit(
        "export", "echo", "m", "--out", str(out), *args, pythonpath=echo_dist, timeout=60
    )
    assert proc.returncode == EXIT_USAGE, (proc.stdout, proc.stderr)
    assert needle in _one_error_line(proc.stderr)
    assert not out.exists()


def test_a_builtin_refuses_a_flag_it_does_not_take(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_hwkit("export", "merged", "smollm2-135m-instruct", "--out", str(out), "-q", "f16")
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "the merged exporter does not take --quant" in line and "it takes: verify" in line
    assert not out.exists()


def test_unknown_kind_lists_the_registered_ones() -> None:
    proc = run_hwkit("export", "tflite", "smollm2-135m-instruct")
    line = _one_error_line(proc.stderr)
    assert "unknown exporter 'tflite'" in line and "gguf, merged, ollama, openvino" in line


def _exporter(kind: str) -> Any:
    from hwkit.runtime import current

    return current().plugins.exporters.get(kind)


NO_FLAGS: dict[str, Any] = dict.fromkeys(
    (
        "quant",
        "system",
        "template_family",
        "temperature",
        "num_ctx",
        "device",
        "min_agreement",
        "verify",
    )
)


def test_only_given_options_are_checked_and_typed() -> None:
    ollama = _exporter("ollama")
    given = {**NO_FLAGS, "system": "Be brief.", "temperature": 0.2}
    assert export_options(ollama, "ollama", given, ["num_ctx=2048"]) == {
        "system": "Be brief.",
        "temperature": 0.2,
        "num_ctx": 2048,
    }
    assert export_options(ollama, "ollama", NO_FLAGS, []) == {}
    # openvino takes --quant for its precision
    openvino = _exporter("openvino")
    assert export_options(openvino, "openvino", {**NO_FLAGS, "quant": "int8"}, []) == {
        "precision": "int8"
    }
    with pytest.raises(UsageError, match="the openvino exporter does not take --system"):
        export_options(openvino, "openvino", {**NO_FLAGS, "system": "x"}, [])
    with pytest.raises(UsageError, match="--option num_ctx: given as --num-ctx too"):
        export_options(ollama, "ollama", {**NO_FLAGS, "num_ctx": 4}, ["num_ctx=8"])
