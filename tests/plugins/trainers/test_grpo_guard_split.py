"""The memory guard splitting a GRPO micro-batch leaves the update unchanged: for the losses
the grpo trainer offers ("dapo", "grpo", "dr_grpo"), one guarded training step on a micro-batch
the guard cut into uneven chunks gives the loss and the LoRA gradients of the unsplit step;
with the chunk weighting switched off, "grpo" does not (so the comparison can fail)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.plugins.trainers.test_train_grpo import profile_rows

pytestmark = pytest.mark.slow

PROMPTS = 1
GROUP = 3  # completions per prompt: a micro-batch of 3 rows, which the guard cuts 2 + 1
COMPLETION = 4
REWARDS = [{"name": "length", "options": {"max_chars": 10, "slack": 30}}]  # varies per sample


def guarded_grpo(loss_type: str, shared_data: Path, output_dir: Path) -> tuple[Any, Any, Any]:
    """(trl trainer, memory guard, mock device): the grpo trainer's own GuardedGRPOTrainer,
    built as ``fit`` builds it, on a planned micro-batch of all PROMPTS * GROUP rows."""
    from hwkit.allocator import Job, MemoryGuard, ModelSpec, plan
    from hwkit.models import resolve_model
    from hwkit.plugins.trainers import modelling
    from hwkit.plugins.trainers.grpo import GRPOConfig, GRPOTrainerPlugin
    from hwkit.plugins.trainers.metrics import TokenCounter
    from hwkit.testing import mock_device

    device = mock_device("cpu")
    model_dir = resolve_model("smollm2-135m-instruct")
    config = GRPOConfig(
        output_dir=output_dir,
        loss_type=loss_type,
        num_generations=GROUP,
        effective_batch=PROMPTS * GROUP,
        micro_batch=PROMPTS * GROUP,
        max_completion_length=COMPLETION,
        max_seq_len=256,
        lora_rank=4,
        lora_dropout=0.0,  # dropout masks would differ between one pass and its chunks
        gradient_checkpointing=False,
        reward=REWARDS,
        probe=False,
    )
    job = Job(
        kind="grpo",
        model=ModelSpec.from_pretrained(model_dir),
        seq_len=256,
        completion_len=COMPLETION,
        group_size=GROUP,
        effective_batch=PROMPTS * GROUP,
        micro_batch=PROMPTS * GROUP,
        lora_rank=4,
        gradient_checkpointing=False,
    )
    the_plan = plan(job, devices=[device])
    assert (the_plan.micro_batch, the_plan.grad_accum) == (PROMPTS * GROUP, 1)
    plugin = GRPOTrainerPlugin(config)
    train_dataset, _ = plugin._datasets(profile_rows(shared_data, PROMPTS), None)
    common = modelling.trl_arguments(config, the_plan, device, output_dir, has_eval=False)
    guard = MemoryGuard(device, micro_batch=the_plan.micro_batch, grad_accum=the_plan.grad_accum)
    trainer = modelling.guarded_trainer(
        plugin.trl_trainer,
        guard=guard,
        tokens=TokenCounter(),
        paired_rows=False,
        device=device,
        output_dir=output_dir,
        keep_checkpoints=1,
        run="grpo",
        model=modelling.load_model(model_dir, the_plan, device, lora=True),
        args=plugin.trl_args(common, the_plan),
        train_dataset=train_dataset,
        processing_class=modelling.load_tokenizer(model_dir),
        peft_config=modelling.peft_config(config),
    )
    # what trainer.train() sets before its first micro-batch
    trainer.current_gradient_accumulation_steps = the_plan.grad_accum
    return trainer, guard, device


def step(trainer: Any, batch: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    """One guarded training step (sampling, rewards, forward, backward) from the same seed:
    (the loss, each trainable parameter's gradient)."""
    from transformers import set_seed

    model = trainer.model
    model.zero_grad(set_to_none=True)
    set_seed(0)
    loss = trainer.training_step(model, list(batch), None)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    return float(loss), grads


def split_by_pressure(guard: Any, device: Any, times: int) -> None:
    """The guard's own reaction to memory pressure at a step boundary, ``times`` times."""
    for _ in range(times):
        device.apply_pressure(0.99)
        assert guard.at_step_boundary()
    device.apply_pressure(0.0)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-7) for k in a)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_a_split_micro_batch_gives_the_unsplit_loss_and_gradients(
    loss_type: str, shared_data: Path, tmp_path: Path
) -> None:
    trainer, guard, device = guarded_grpo(loss_type, shared_data, tmp_path / "run")
    assert trainer.hwkit_scale_chunks == (loss_type != "dapo")
    batch = next(iter(trainer.get_train_dataloader()))
    assert len(batch) == PROMPTS * GROUP
    loss, grads = step(trainer, batch)
    assert guard.split == 1
    # the guarded step runs beneath trl's own: its micro-step count (which slice of the
    # sampled batch trains next, when to sample again) advances
    assert trainer._step == 1
    assert sum(float(g.norm()) for g in grads.values()) > 0  # the advantages are not all zero

    split_by_pressure(guard, device, times=1)  # 3 rows in uneven chunks of 2 and 1 rows
    assert guard.micro_batch == 1 and len(guard.decisions) == 1
    split_loss, split_grads = step(trainer, batch)
    # at the sampling policy the ratio is 1 and a group's advantages sum to 0: the loss is
    # about 0 either way, so its value is compared absolutely; the gradients carry the check
    assert split_loss == pytest.approx(loss, abs=1e-6)
    assert same(split_grads, grads)

    if loss_type == "grpo":
        # the check is sensitive: without weighting each chunk by its share of rows, the
        # chunks' per-row means add up to far more than the micro-batch's mean
        trainer.hwkit_scale_chunks = False
        _, unweighted = step(trainer, batch)
        assert not same(unweighted, grads)
