"""The cross-encoder trainer's checkpoints in the one scheme (:mod:`hwkit.checkpoints`).

``checkpoints/checkpoint-N/`` holds the model weights and the AdamW state as safetensors
and the step, per-step losses, evaluations and optimizer groups as JSON (no pickle). It is
written in a temporary folder, marked complete and renamed; resume removes unmarked
leftovers of a killed save and loads the newest complete one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit import checkpoints as ckpt
from hwkit.atomic import write_json_atomic
from hwkit.log import get_logger

log = get_logger("hwkit.train.cross_encoder")

MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"


@dataclass(frozen=True)
class Restored:
    """Where a resumed run continues: the step reached and what was logged up to it."""

    path: Path
    step: int
    losses: list[float]
    evaluations: list[dict[str, float]] = field(default_factory=list)


def save(
    folder: Path,
    step: int,
    model: Any,
    optimizer: Any,
    losses: list[float],
    evaluations: list[dict[str, float]],
    *,
    keep: int,
) -> Path:
    """``folder/checkpoint-STEP`` (complete, marked), keeping the newest ``keep``."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        state = optimizer.state_dict()
        tensors: dict[str, Any] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / MODEL))
        save_file(tensors, str(tmp / OPTIMIZER))
        meta = {
            "step": step,
            "losses": losses,
            "evaluations": evaluations,
            "param_groups": state["param_groups"],
        }
        write_json_atomic(tmp / STATE, meta)

    path = ckpt.save_checkpoint(folder, step, write, keep=keep)
    log.info("checkpoint.saved", step=step, path=str(path))
    return path


def restore(folder: Path, model: Any, optimizer: Any) -> Restored | None:
    """Load the newest complete checkpoint into ``model`` and ``optimizer`` (after removing
    torn ones); None when there is none."""
    from safetensors.torch import load_file

    ckpt.remove_incomplete(folder)
    latest = ckpt.latest_complete(folder)
    if latest is None:
        log.info("train.resume_without_checkpoint", folder=str(folder))
        return None
    meta = json.loads((latest / STATE).read_text(encoding="utf-8"))
    model.load_state_dict(load_file(str(latest / MODEL)))
    state: dict[int, dict[str, Any]] = {}
    for key, value in load_file(str(latest / OPTIMIZER)).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return Restored(
        latest,
        int(meta["step"]),
        [float(x) for x in meta["losses"]],
        list(meta.get("evaluations", [])),
    )
