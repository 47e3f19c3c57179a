"""The local model registry on real files: copies, numbering, champion, rollback, locking."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.plugins.pipeline import registry as registry_mod
from hwkit.plugins.pipeline.registry import ModelRegistry, default_registry_root


def _artifacts(tmp_path: Path) -> dict[str, Path]:
    gguf = tmp_path / "src" / "model.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    gguf.write_bytes(b"GGUF fake weights")
    (tmp_path / "src" / "Modelfile").write_text("FROM ./model.gguf\n")
    model_dir = tmp_path / "src" / "merged"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.json").write_text("{}")
    return {"gguf": gguf, "modelfile": tmp_path / "src" / "Modelfile", "model_dir": model_dir}


def test_register_copies_artifacts_and_numbers_versions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    v1 = reg.register("persona", _artifacts(tmp_path), metrics={"f1": 0.5}, run="runs/a")
    v2 = reg.register("persona", _artifacts(tmp_path), metrics={"f1": 0.6}, source="db")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.artifacts == {"gguf": "model.gguf", "modelfile": "Modelfile", "model_dir": "merged"}
    folder = reg.version_dir("persona", 2)
    assert (folder / "model.gguf").read_bytes() == b"GGUF fake weights"
    assert (folder / "merged" / "config.json").is_file()
    assert reg.artifact_path("persona", v2, "gguf") == folder / "model.gguf"
    assert reg.names() == ["persona"] and reg.versions("persona") == [v1, v2]
    assert reg.get("persona", 1).run == "runs/a" and reg.get("persona", "v2").source == "db"
    doc = json.loads((tmp_path / "reg" / "persona" / "registry.json").read_text())
    assert doc["format"] == 1 and doc["name"] == "persona" and doc["aliases"] == {}
    assert [h["action"] for h in doc["history"]] == ["register", "register"]


def test_register_without_copy_records_paths_as_given(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    gguf = _artifacts(tmp_path)["gguf"]
    v = reg.register("m", {"gguf": gguf}, copy=False)
    assert v.artifacts == {"gguf": str(gguf.resolve())}
    assert reg.artifact_path("m", v, "gguf") == gguf.resolve()
    assert not reg.version_dir("m", 1).exists()


def test_promote_rollback_and_aliases(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for _ in range(3):
        reg.register("m", {}, metrics={"f1": 0.1})
    assert reg.champion("m") is None and reg.previous_champion("m") is None
    with pytest.raises(NotFoundError, match="no champion yet"):
        reg.get("m", "champion")
    assert reg.get("m", "latest").version == 3 and reg.get("m", "3").version == 3

    reg.promote("m", 1)
    reg.promote("m", "v2", reason="better f1")
    assert reg.champion("m") == reg.get("m", "champion") == reg.get("m", 2)
    assert reg.previous_champion("m") == reg.get("m", 1)
    assert reg.aliases("m") == {"champion": 2, "latest": 3}
    assert reg.rollback("m", reason="regressed").version == 1
    assert reg.champion("m") == reg.get("m", 1)
    with pytest.raises(UsageError, match="no earlier champion to roll back to"):
        reg.rollback("m")

    history = reg.history("m")[3:]
    assert [(h.action, h.version, h.previous, h.reason) for h in history] == [
        ("promote", 1, None, None),
        ("promote", 2, 1, "better f1"),
        ("rollback", 1, 2, "regressed"),
    ]


def test_rollback_follows_the_champion_stack(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    for _ in range(3):
        reg.register("m", {})
    reg.promote("m", 1)
    reg.promote("m", 2)
    assert reg.rollback("m").version == 1
    reg.promote("m", 3)
    assert reg.promote("m", 3).version == 3  # already champion: no new history entry
    assert [h.action for h in reg.history("m")].count("promote") == 3
    assert reg.rollback("m").version == 1


def test_unknown_names_and_versions_list_what_exists(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.register("alpha", {})
    with pytest.raises(NotFoundError, match="no model 'beta'") as exc:
        reg.versions("beta")
    assert "known: alpha" in str(exc.value)
    with pytest.raises(NotFoundError, match="no version v7") as exc:
        reg.get("alpha", 7)
    assert "versions: v1" in str(exc.value)
    with pytest.raises(NotFoundError, match="no version or alias 'best'"):
        reg.get("alpha", "best")


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "sp ace", "x\\y"])
def test_invalid_name_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid model name") as exc:
        ModelRegistry(tmp_path).register(bad, {})
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_newer_format_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.register("m", {})
    path = tmp_path / "m" / "registry.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "format": 2}))
    with pytest.raises(ConfigError, match="written by a newer hwkit") as exc:
        reg.versions("m")
    assert str(path) in str(exc.value) and "upgrade hwkit" in str(exc.value)
    with pytest.raises(ConfigError):
        reg.register("m", {})


def test_failed_copy_leaves_no_version_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = ModelRegistry(tmp_path / "reg")
    reg.register("m", {})
    calls: list[Path] = []

    def copy_then_fail(src: Path, dst: Path) -> None:
        calls.append(src)
        if len(calls) == 2:
            raise OSError("disk full")
        registry_mod.shutil.copy2(src, dst)

    monkeypatch.setattr(registry_mod, "_copy_artifact", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        reg.register("m", _artifacts(tmp_path))
    assert sorted(p.name for p in (tmp_path / "reg" / "m").iterdir()) == [
        ".lock",
        "registry.json",
        "v1",
    ]
    assert [v.version for v in reg.versions("m")] == [1]
    monkeypatch.undo()
    assert reg.register("m", _artifacts(tmp_path)).version == 2


def test_leftover_version_folder_is_not_reused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    reg.register("m", {})
    (tmp_path / "m" / "v2").mkdir()  # renamed into place by a process killed before the write
    assert reg.register("m", {}).version == 3


def test_default_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWKIT_REGISTRY_DIR", str(tmp_path))
    assert default_registry_root() == tmp_path and ModelRegistry().root == tmp_path
    monkeypatch.delenv("HWKIT_REGISTRY_DIR")
    assert default_registry_root() == Path.home() / ".local/share/hwkit/registry"


def _register_five(root: str, src: str, worker: int) -> None:
    reg = ModelRegistry(Path(root))
    for i in range(5):
        reg.register("shared", {"file": Path(src)}, tags={"worker": str(worker), "i": str(i)})


def test_concurrent_writers_lose_no_version(tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(b"x" * 1024)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_register_five, args=(str(tmp_path / "reg"), str(src), w))
        for w in (1, 2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    versions = ModelRegistry(tmp_path / "reg").versions("shared")
    assert sorted(v.version for v in versions) == list(range(1, 11))
    assert sorted((v.tags["worker"], v.tags["i"]) for v in versions) == sorted(
        (str(w), str(i)) for w in (1, 2) for i in range(5)
    )
    for v in versions:
        copied = tmp_path / "reg" / "shared" / f"v{v.version}" / "weights.bin"
        assert copied.stat().st_size == 1024


def test_staging_folders_of_killed_registers_are_swept(tmp_path: Path) -> None:
    """A register killed mid-copy leaves its staging folder; the next register on this host
    removes it, and leaves a live process's (still copying) alone."""
    import subprocess
    import sys

    reg = ModelRegistry(tmp_path)
    reg.register("m", {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    killed = tmp_path / "m" / f"{registry_mod._staging_prefix(int(dead.stdout))}-abc"
    running = tmp_path / "m" / f"{registry_mod._staging_prefix(os.getpid())}-def"
    other_host = tmp_path / "m" / ".staging-elsewhere-1-ghi"
    for folder in (killed, running, other_host):
        folder.mkdir()
        (folder / "model.gguf").write_bytes(b"partial")
    reg.register("m", _artifacts(tmp_path))
    left = sorted(p.name for p in (tmp_path / "m").glob(".staging-*"))
    assert left == sorted([running.name, other_host.name])
