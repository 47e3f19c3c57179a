"""Checkpoint bookkeeping without a training run: only marked checkpoints count, torn ones
are removed, rotation never drops the newest complete one, metrics are cut at the resume
step, and run files are written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from hwkit import checkpoints as ckpt
from hwkit.atomic import write_json_atomic
from hwkit.plugins.trainers.metrics import truncate_metrics
from hwkit.rundir import read_jsonl


def _checkpoint(folder: Path, step: int, *, complete: bool) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"x" * 32)
    if complete:
        ckpt.mark_complete(path, step=step)
    return path


def test_only_marked_checkpoints_are_resumed_from(tmp_path: Path) -> None:
    for step, done in ((10, True), (20, True), (30, False)):
        _checkpoint(tmp_path, step, complete=done)
    (tmp_path / "not-a-checkpoint").mkdir()
    assert ckpt.latest_complete(tmp_path) == tmp_path / "checkpoint-20"
    assert [p.name for p in ckpt.checkpoints(tmp_path, complete_only=False)] == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-30",
    ]
    removed = ckpt.remove_incomplete(tmp_path)
    assert removed == [tmp_path / "checkpoint-30"] and not removed[0].exists()
    marker = json.loads((tmp_path / "checkpoint-20" / ckpt.MARKER).read_text())
    assert marker["step"] == 20 and "adapter_model.safetensors" in marker["files"]


def test_rotation_keeps_newest_complete(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        _checkpoint(tmp_path, step, complete=True)
    _checkpoint(tmp_path, 4, complete=False)  # a save in progress is never counted
    ckpt.rotate(tmp_path, keep=2)
    names = [p.name for p in ckpt.checkpoints(tmp_path, complete_only=False)]
    assert names == ["checkpoint-2", "checkpoint-3", "checkpoint-4"]
    assert ckpt.latest_complete(tmp_path) == tmp_path / "checkpoint-3"


def test_no_checkpoints_folder(tmp_path: Path) -> None:
    assert ckpt.latest_complete(tmp_path / "missing") is None
    assert ckpt.remove_incomplete(tmp_path / "missing") == []


def test_metrics_cut_at_resume_step_and_torn_line_skipped(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 4.0 - s / 10} for s in range(0, 6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 3, 4, 5]
    truncate_metrics(path, after_step=3)
    assert [r["step"] for r in read_jsonl(path)] == [0, 1, 2, 3]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]
