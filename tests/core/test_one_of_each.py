"""The core's one-of-each helpers: optional dependencies, content hashes, rejects,
checkpoints, atomic folders and the cache root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit import checkpoints, hashing
from hwkit.atomic import staged_dir, staged_file
from hwkit.errors import UnavailableError
from hwkit.extras import install_hint, is_available, require
from hwkit.paths import cache_dir, cache_root
from hwkit.rejects import Reject, count_by_reason, read_rejects, write_rejects


def test_a_missing_optional_module_names_the_extra() -> None:
    assert install_hint("bm25s") == "pip install 'hwkit[retrieval]'"
    assert install_hint("faiss.contrib") == "pip install 'hwkit[retrieval]'"
    assert install_hint("left_pad_xyz") == "pip install left-pad-xyz"
    assert is_available("json") and not is_available("no_such_module_xyz")
    with pytest.raises(UnavailableError) as err:
        require("pymilvus_not_installed_xyz", purpose="the milvus store")
    line = err.value.one_line()
    assert "the milvus store needs pymilvus_not_installed_xyz" in line and "\n" not in line
    assert require("json").dumps([1]) == "[1]"


def test_model_digest_follows_the_files_that_define_the_model(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "README.md").write_text("notes")
    (model / "checkpoints" / "checkpoint-1" / "model.safetensors").write_bytes(b"old")
    assert [p.as_posix() for p in hashing.model_files(model)] == [
        "config.json",
        "model.safetensors",
    ]
    before = hashing.model_digest(model)
    (model / "README.md").write_text("other notes")  # not part of the model
    assert hashing.model_digest(model) == before
    (model / "model.safetensors").write_bytes(b"weights2")
    assert hashing.model_digest(model) != before
    assert hashing.file_digest(model / "config.json") == hashing.text_digest('{"hidden_size": 8}')


def test_rejects_round_trip_and_say_where(tmp_path: Path) -> None:
    rejects = [
        Reject("no text", {"_id": "d2"}, source="corpus.jsonl", line=2),
        Reject("empty_answer", {"q": "x"}, source="sqlite:///db", row=7, detail="answer is blank"),
        Reject("no text", {"_id": "d9"}, source="corpus.jsonl", line=9),
    ]
    path = tmp_path / "rejects.jsonl"
    assert write_rejects(path, rejects) == 3
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {
        "source": "corpus.jsonl",
        "line": 2,
        "reason": "no text",
        "detail": "",
        "record": {"_id": "d2"},
    }
    assert read_rejects(path) == rejects
    assert read_rejects(tmp_path / "absent.jsonl") == []
    assert [r.where() for r in rejects] == [
        "corpus.jsonl:2",
        "sqlite:///db row 7",
        "corpus.jsonl:9",
    ]
    assert count_by_reason(rejects) == {"empty_answer": 1, "no text": 2}


def test_checkpoints_appear_whole_and_rotate(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"

    def write(step: int) -> None:
        def fill(tmp: Path) -> None:
            (tmp / "state.json").write_text(json.dumps({"step": step}))

        checkpoints.save_checkpoint(folder, step, fill, keep=2, extra={"loss": 1.0 / step})

    for step in (1, 2, 3):
        write(step)
    names = [p.name for p in checkpoints.checkpoints(folder)]
    assert names == ["checkpoint-2", "checkpoint-3"]
    latest = checkpoints.latest_complete(folder)
    assert latest is not None and checkpoints.step_of(latest) == 3
    marker = json.loads((latest / checkpoints.MARKER).read_text())
    assert marker["step"] == 3 and marker["files"] == ["state.json"] and marker["loss"] == 1 / 3

    def broken(tmp: Path) -> None:
        (tmp / "state.json").write_text("{")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoints.save_checkpoint(folder, 4, broken, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    (folder / "checkpoint-5").mkdir()  # a killed in-place save (HF Trainer): no marker
    assert checkpoints.latest_complete(folder) == latest
    assert checkpoints.remove_incomplete(folder) == [folder / "checkpoint-5"]


def test_staged_writes_replace_only_when_the_block_succeeds(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with staged_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), staged_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("verification failed")
    assert (target / "a.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    file = tmp_path / "f.gguf"
    with pytest.raises(RuntimeError), staged_file(file) as tmp_file:
        tmp_file.write_bytes(b"partial")
        raise RuntimeError("no")
    assert not file.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_one_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HWKIT_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and cache_dir("milvus") == tmp_path / "c" / "milvus"
    monkeypatch.delenv("HWKIT_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "hwkit"
