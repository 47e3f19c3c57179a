"""An out-of-memory error injected mid-run on a MockDevice is survived: the same micro-batch
is retried in halves (packed batches split by sequence), no optimizer step is lost, the
effective batch is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_injected_oom_keeps_every_step(tmp_path: Path) -> None:
    from hwkit.allocator import Job, ModelSpec, plan
    from hwkit.models import resolve_model
    from hwkit.plugins.data import prepare
    from hwkit.plugins.trainers.config import SFTConfig
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin, persona_data
    from hwkit.testing import mock_device

    device = mock_device("cpu")
    model_dir = resolve_model("smollm2-135m-instruct")
    job = Job(
        kind="sft",
        model=ModelSpec.from_pretrained(model_dir),
        seq_len=64,
        effective_batch=4,
        micro_batch=2,
        lora_rank=4,
    )
    the_plan = plan(job, devices=[device])
    assert (the_plan.micro_batch, the_plan.grad_accum) == (2, 2)
    data = prepare(persona_data().model_copy(update={"validation_fraction": 0.0}))
    config = SFTConfig(
        output_dir=tmp_path / "run",
        max_steps=2,
        max_seq_len=64,
        lora_rank=4,
        save_steps=10,
    )
    # packed (padding-free) micro-batches: the guard splits them by sequence
    device.inject_oom(times=1)
    result = SFTTrainerPlugin(config).fit(
        data.train, plan=the_plan, device=device, output_dir=tmp_path / "run"
    )
    assert device.oom_raised == 1
    assert result.steps == 2  # no optimizer step lost
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    (decision,) = report["guard_decisions"]
    assert decision["reason"] == "oom"
    assert (decision["old_micro_batch"], decision["new_micro_batch"]) == (2, 1)
    assert (decision["old_grad_accum"], decision["new_grad_accum"]) == (2, 4)
    assert report["final_micro_batch"] * report["final_grad_accum"] == 4  # effective batch kept
    assert device.cache_frees >= 1
