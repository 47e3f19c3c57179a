"""``hwkit models list|show|promote|rollback`` through the real CLI app and CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hwkit.cli import app
from hwkit.errors import NotFoundError, UsageError
from hwkit.plugins.pipeline.registry import ModelRegistry

runner = CliRunner()


def _registry(tmp_path: Path) -> ModelRegistry:
    reg = ModelRegistry(tmp_path)
    gguf = tmp_path.parent / f"{tmp_path.name}-model.gguf"
    gguf.write_bytes(b"GGUF")
    reg.register("persona", {"gguf": gguf}, metrics={"f1": 0.5}, run="runs/one")
    reg.register("persona", {"gguf": gguf}, metrics={"f1": 0.6}, run="runs/two")
    return reg


def models(tmp_path: Path, *args: str) -> tuple[int, str, BaseException | None]:
    res = runner.invoke(app, ["models", *args, "--registry", str(tmp_path)])
    return res.exit_code, res.stdout, res.exception


def test_list_show_promote_rollback(tmp_path: Path) -> None:
    _registry(tmp_path)
    code, out, _ = models(tmp_path, "list", "--json")
    assert code == 0 and json.loads(out) == [
        {"name": "persona", "versions": 2, "champion": None, "champion_created": None}
    ]

    code, out, _ = models(tmp_path, "promote", "persona", "1")
    assert code == 0 and "persona: v1 is the champion (was none)" in out
    code, out, _ = models(tmp_path, "promote", "persona", "latest", "--reason", "f1 up")
    assert code == 0 and "v2 is the champion (was v1)" in out

    code, out, _ = models(tmp_path, "show", "persona", "champion", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == 2 and shown["metrics"] == {"f1": 0.6}
    assert shown["run"] == "runs/two" and shown["artifacts"]["gguf"].endswith("model.gguf")
    assert Path(shown["path"]) == tmp_path / "persona" / "v2"

    code, out, _ = models(tmp_path, "rollback", "persona", "--reason", "bad answers")
    assert code == 0 and "rolled back from v2 to v1" in out

    code, out, _ = models(tmp_path, "show", "persona", "--json")
    everything = json.loads(out)
    assert everything["champion"] == 1 and len(everything["versions"]) == 2
    assert [(h["action"], h["reason"]) for h in everything["history"][2:]] == [
        ("promote", None),
        ("promote", "f1 up"),
        ("rollback", "bad answers"),
    ]

    code, out, _ = models(tmp_path, "list")
    assert code == 0 and "persona" in out and "v1" in out
    code, out, _ = models(tmp_path, "show", "persona")
    assert code == 0 and "v1 (champion)" in out and "bad answers" in out
    code, out, _ = models(tmp_path, "show", "persona", "v2")
    assert code == 0 and "runs/two" in out and "f1" in out


def test_errors_are_hwkit_errors(tmp_path: Path) -> None:
    _registry(tmp_path)
    _, _, exc = models(tmp_path, "show", "nobody")
    assert isinstance(exc, NotFoundError) and "known: persona" in str(exc)
    _, _, exc = models(tmp_path, "promote", "persona", "9")
    assert isinstance(exc, NotFoundError) and "versions: v1, v2" in str(exc)
    _, _, exc = models(tmp_path, "rollback", "persona")
    assert isinstance(exc, UsageError) and "no earlier champion" in str(exc)


def test_empty_registry_lists_nothing(tmp_path: Path) -> None:
    code, out, _ = models(tmp_path / "none", "list")
    assert code == 0 and "no models" in out
