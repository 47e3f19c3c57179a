"""MemoryGuard survives injected out-of-memory errors and pressure without losing a step."""

from __future__ import annotations

import copy
import json
import time

import pytest
import torch

from hwkit.allocator import MemoryGuard
from hwkit.allocator.spec import shipped_names
from hwkit.plugin_manager import load_plugins
from hwkit.testing import MockDevice

PROFILES = load_plugins().profiles
ROWS, SEQ, STEPS, ACCUM = 4, 16, 2, 2  # micro-batch 4 x accumulation 2 = effective batch 8


def tiny_smollm2() -> torch.nn.Module:
    """SmolLM2-135M's architecture cut to 2 narrow layers, random weights."""
    import transformers

    data = json.loads(shipped_names()["smollm2-135m"].read_text())
    data.update(
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
    )
    config = transformers.AutoConfig.for_model(**data)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation="sdpa"
    )


def batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS * ACCUM):
        ids = torch.randint(0, 512, (ROWS, SEQ), generator=gen)
        out.append({"input_ids": ids, "labels": ids})
    return out


def train(
    model: torch.nn.Module, device: MockDevice, guard: MemoryGuard | None, arm_at: int | None
):
    """A plain accumulation loop; the guard (if any) runs each micro-batch. Returns
    (optimizer steps, gradients before the first step, final parameters)."""
    model = device.place(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps, first_grads = 0, None

    def step_fn(chunk: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        loss = model(**chunk).loss * scale / ACCUM
        loss.backward()
        return loss

    data = batches()
    for i, batch in enumerate(data):
        if arm_at is not None and i == arm_at:
            device.inject_oom(times=1, min_batch=ROWS)  # the next full micro-batch fails
        if guard is None:
            step_fn(batch, 1.0)
        else:
            guard.run_micro_batch(batch, step_fn, model.parameters())
        if (i + 1) % ACCUM == 0:
            if first_grads is None:
                first_grads = [p.grad.clone() for p in model.parameters()]
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
    return steps, first_grads, [p.detach().clone() for p in model.parameters()]


def test_injected_oom_mid_run_keeps_steps_batch_and_gradients() -> None:
    base = tiny_smollm2()
    clean = train(copy.deepcopy(base), MockDevice(PROFILES.get("t4")), None, None)
    device = MockDevice(PROFILES.get("t4"))
    guard = MemoryGuard(device, micro_batch=ROWS, grad_accum=ACCUM)
    # arm the failure on the second micro-batch of the first step: gradients exist already
    survived = train(copy.deepcopy(base), device, guard, arm_at=1)
    assert device.oom_raised == 1 and device.cache_frees >= 1
    assert survived[0] == clean[0] == STEPS
    assert (guard.micro_batch, guard.grad_accum) == (ROWS // 2, ACCUM * 2)
    assert guard.micro_batch * guard.grad_accum == ROWS * ACCUM
    [decision] = guard.decisions
    assert decision.reason == "oom" and decision.old_micro_batch == ROWS
    for got, want in zip(survived[1], clean[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for got, want in zip(survived[2], clean[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_gradients_are_restored_when_a_later_chunk_fails() -> None:
    """An OOM after a chunk already added its gradient must not count that chunk twice."""
    base = tiny_smollm2()
    gen = torch.Generator().manual_seed(2)
    first, second = (torch.randint(0, 512, (rows, SEQ), generator=gen) for rows in (4, 5))

    def loss_of(model: torch.nn.Module, ids: torch.Tensor, scale: float) -> torch.Tensor:
        loss = model(input_ids=ids, labels=ids).loss * scale
        loss.backward()
        return loss

    clean = copy.deepcopy(base)
    loss_of(clean, first, 1.0)
    want = loss_of(clean, second, 1.0)

    device = MockDevice(PROFILES.get("rtx5090"))
    model = device.place(copy.deepcopy(base))
    loss_of(model, first, 1.0)  # gradients from an earlier micro-batch of the same step
    guard = MemoryGuard(device, micro_batch=5, grad_accum=1)
    # 5 rows fail; then chunks of 2 + 3 rows: the 2-row chunk runs, the 3-row one fails
    device.inject_oom(times=2, min_batch=3)
    got = guard.run_micro_batch(
        {"input_ids": second, "labels": second},
        lambda chunk, scale: loss_of(model, chunk["input_ids"], scale),
        model.parameters(),
    )
    assert device.oom_raised == 2 and guard.split == 4 and len(guard.decisions) == 2
    torch.testing.assert_close(got, want.detach(), rtol=1e-4, atol=1e-6)
    for p_got, p_want in zip(model.parameters(), clean.parameters(), strict=True):
        torch.testing.assert_close(p_got.grad, p_want.grad, rtol=1e-4, atol=1e-6)


def test_a_single_row_that_does_not_fit_reraises() -> None:
    model = tiny_smollm2()
    device = MockDevice(PROFILES.get("t4"))
    model = device.place(model)
    guard = MemoryGuard(device, micro_batch=2, grad_accum=1)
    device.inject_oom(times=5)
    ids = torch.randint(0, 512, (2, SEQ))

    def step_fn(chunk: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        loss = model(**chunk).loss * scale
        loss.backward()
        return loss

    with pytest.raises(torch.OutOfMemoryError):
        guard.run_micro_batch({"input_ids": ids, "labels": ids}, step_fn, model.parameters())
    assert guard.split == 2 and device.oom_raised == 2
    assert all(p.grad is None for p in model.parameters())


def test_other_errors_pass_through_untouched() -> None:
    guard = MemoryGuard(MockDevice(PROFILES.get("t4")), micro_batch=4, grad_accum=1)

    def broken(chunk: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        guard.run_micro_batch({"x": torch.zeros(4, 2)}, broken, [])
    assert guard.split == 1 and not guard.decisions


def test_pressure_at_a_step_boundary_halves_the_micro_batch() -> None:
    device = MockDevice(PROFILES.get("h200"))
    guard = MemoryGuard(device, micro_batch=8, grad_accum=2, pressure_threshold=0.9)
    # no background thread here: each boundary samples the device itself
    assert not guard.at_step_boundary()
    device.apply_pressure(0.95)
    assert guard.at_step_boundary()
    assert (guard.micro_batch, guard.grad_accum) == (4, 4)
    device.apply_pressure(0.5)
    assert not guard.at_step_boundary()
    assert device.cache_frees == 1
    [decision] = guard.decisions
    assert decision.reason == "pressure" and decision.pressure == pytest.approx(0.95)
    assert (decision.old_micro_batch, decision.new_micro_batch) == (8, 4)
    assert (decision.old_grad_accum, decision.new_grad_accum) == (2, 4)


def test_background_sampler_catches_a_spike_between_boundaries() -> None:
    device = MockDevice(PROFILES.get("h200"))
    guard = MemoryGuard(device, micro_batch=4, grad_accum=1, interval_s=0.01)
    with guard:
        device.apply_pressure(0.97)
        seen = guard.samples
        deadline = time.monotonic() + 5
        while guard.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        device.apply_pressure(0.1)  # gone again before the boundary
        assert guard.at_step_boundary()
    assert guard.micro_batch == 2
