"""The model pool places every model by its ``generate`` plan, on hwkit's mock hardware.

A mock device computes on CPU tensors but is the runtime's device for its profile, so these
tests see where a plan put a model (``cuda:0`` on a mock RTX 5090, ``xpu:0`` on a mock Arc
iGPU), in which dtype, and that generation runs there. Generation stays at a few tokens.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from hwkit.errors import NoFitError
from hwkit.inference import GenerationParams
from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.pool import ModelPool
from hwkit.runtime import Runtime
from hwkit.testing import mock_runtime

MODEL = "smollm2-135m-instruct"
HI = [{"role": "user", "content": "Hi"}]


def _health(app: Any) -> dict[str, Any]:
    """``GET /health`` through the app's own endpoint function."""
    route = next(r for r in app.routes if getattr(r, "path", None) == "/health")
    result: dict[str, Any] = asyncio.run(route.endpoint())
    return result


@pytest.mark.parametrize(
    ("profile", "device", "dtype"),
    [
        ("rtx5090", "cuda:0", "bfloat16"),
        ("h200", "cuda:0", "bfloat16"),
        ("arc-meteor-lake", "xpu:0", "float16"),
    ],
)
def test_inference_lands_on_the_planned_device(profile: str, device: str, dtype: str) -> None:
    import torch

    from hwkit.plugins.serving.routes import create_app

    runtime = mock_runtime(profile)
    app = create_app(ServeConfig(models={"smol": MODEL}), runtime)
    pool: ModelPool = app.state.hwkit.pool
    generator = pool.get("smol")
    plan = generator.plan
    assert plan.device == device and plan.dtype == dtype and plan.runtime == "transformers"
    # the runtime's own device for that id, not the CPU backend's cpu:0
    assert generator.device is runtime.device(plan.device)
    assert generator.device.id == device and generator.device.profile.name == profile
    params = {p.dtype for p in generator.model.parameters()}
    assert params == {getattr(torch, dtype)}
    completion = generator.generate(generator.prompt(HI, 3), GenerationParams(3))
    assert completion.completion_tokens >= 1 and completion.text.strip()

    placed = _health(app)["placements"]["smol"]
    assert placed["device"] == device and placed["dtype"] == dtype
    assert placed["runtime"] == "transformers" and placed["planned_bytes"] == plan.estimate.total
    assert placed["reasons"]["device"].startswith(f"{device} ")
    assert f"profile {profile}" in placed["reasons"]["device"]
    assert "transformers" in placed["reasons"]["runtime"]
    pool.close()


def test_dtype_given_overrides_the_plan_with_that_reason() -> None:
    import torch

    runtime = mock_runtime("rtx5090")
    planned = ModelPool({"smol": MODEL}, runtime)
    forced = ModelPool({"smol": MODEL}, runtime, dtype="float32")
    bf16, fp32 = planned.get("smol").plan, forced.get("smol").plan
    assert bf16.dtype == "bfloat16" and fp32.dtype == "float32"
    assert fp32.reasons["dtype"] == "float32 as requested (the plan chose bfloat16)"
    assert fp32.estimate.weights == 2 * bf16.estimate.weights  # the estimate is redone
    generator = forced.get("smol")
    assert {p.dtype for p in generator.model.parameters()} == {torch.float32}
    planned.close()
    forced.close()


def _room_for(runtime: Runtime, device_id: str, models: float, need: int) -> None:
    """Fill the mock device so that its plan budget holds ``models`` models of ``need``."""
    from hwkit.allocator import device_budget

    device: Any = runtime.device(device_id)
    profile = runtime.profile_for(device)
    margin = device_budget(device, profile).margin
    device.set_used(device.memory().total - margin - int(models * need))
    assert device_budget(device, profile).bytes == int(models * need)


def _need(runtime: Runtime) -> int:
    pool = ModelPool({"m": MODEL}, runtime)
    need = pool.get("m").plan.estimate.total
    pool.close()
    return need


def _two_mock_gpus() -> Runtime:
    """A runtime with two mock RTX 5090s and no profile named: plans use every device."""
    from hwkit.hardware_profile import PROFILE_ENV
    from hwkit.runtime import current
    from hwkit.testing import MockBackend

    plugins = current().plugins
    env = {k: v for k, v in os.environ.items() if k != PROFILE_ENV}
    runtime = Runtime(plugins, env, registered_hardware=False)
    runtime.attach_backend(MockBackend(*[plugins.profiles.get("rtx5090")] * 2))
    return runtime


def test_the_next_model_goes_where_the_loaded_ones_leave_room() -> None:
    """Two mock GPUs with room for one model each: the second model lands on the second
    device because the first one's plan is reserved on cuda:0, and nothing is evicted."""
    runtime = _two_mock_gpus()
    need = _need(runtime)
    for device in ("cuda:0", "cuda:1"):
        _room_for(runtime, device, 1.5, need)
    pool = ModelPool({"a": MODEL, "b": MODEL}, runtime)
    a, b = pool.get("a"), pool.get("b")
    assert {a.device.id, b.device.id} == {"cuda:0", "cuda:1"}
    assert pool.reserved() == {a.device.id: need, b.device.id: need}
    assert pool.evictions == [] and pool.loaded() == ["a", "b"]
    # the plan for "b" says why not next to "a": a's plan is reserved there
    assert f"; {a.device.id} (rtx5090): needs" in b.plan.reasons["device"]
    pool.close()


def test_memory_budget_is_per_device() -> None:
    """With a budget of 1.5 models per device and two mock GPUs, two models load side by
    side (a budget over all devices together would have evicted the first)."""
    runtime = _two_mock_gpus()
    need = _need(runtime)
    for device in ("cuda:0", "cuda:1"):
        _room_for(runtime, device, 1.5, need)
    pool = ModelPool({"a": MODEL, "b": MODEL}, runtime, budget=int(need * 1.5))
    a, b = pool.get("a"), pool.get("b")
    assert {a.device.id, b.device.id} == {"cuda:0", "cuda:1"}
    assert pool.evictions == [] and pool.loaded() == ["a", "b"]
    assert pool.used_bytes() == 2 * need > pool.budget  # over the cap together, not per device
    pool.close()


def test_when_nothing_fits_the_least_recently_used_is_evicted() -> None:
    runtime = mock_runtime("rtx5090")
    need = _need(runtime)
    _room_for(runtime, "cuda:0", 1.5, need)
    pool = ModelPool({"a": MODEL, "b": MODEL}, runtime)
    first = pool.get("a")
    assert pool.get("b").device.id == "cuda:0"
    assert pool.loaded() == ["b"] and pool.evictions == ["a"]
    assert first.model is None  # closed: its weights released
    pool.close()


def test_a_model_that_fits_nowhere_is_a_clear_no_fit_error() -> None:
    runtime = mock_runtime("rtx5090")
    need = _need(runtime)
    _room_for(runtime, "cuda:0", 0.5, need)
    pool = ModelPool({"a": MODEL}, runtime)
    with pytest.raises(NoFitError, match=r"model 'a' fits on no device, with no other model"):
        pool.get("a")
    assert pool.loaded() == []


def test_memory_budget_caps_the_planned_bytes() -> None:
    runtime = mock_runtime("rtx5090")
    need = _need(runtime)
    pool = ModelPool({"a": MODEL, "b": MODEL}, runtime, budget=int(need * 1.5))
    pool.get("a")
    pool.get("b")
    assert pool.loaded() == ["b"] and pool.evictions == ["a"]
    assert pool.used_bytes() == need <= pool.budget
    small = ModelPool({"a": MODEL}, runtime, budget=need // 2)
    with pytest.raises(NoFitError, match=r"over the serving budget"):
        small.get("a")
    pool.close()


def test_a_leased_model_is_closed_by_its_last_user() -> None:
    runtime = mock_runtime("rtx5090")
    need = _need(runtime)
    pool = ModelPool({"a": MODEL, "b": MODEL}, runtime, budget=int(need * 1.5))
    with pool.lease("a") as a:
        pool.get("b")  # evicts "a" from the pool while it is in use
        assert pool.evictions == ["a"] and a.model is not None
        assert a.generate(a.prompt(HI, 2), GenerationParams(2)).completion_tokens >= 1
    assert a.model is None
    pool.close()
