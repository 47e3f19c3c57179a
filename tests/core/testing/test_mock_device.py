"""The mock device reports a profile's identity and memory and fails the way hardware does."""

from __future__ import annotations

import pytest
import torch

from hwkit.plugin_manager import load_plugins
from hwkit.testing import MockDevice
from hwkit.testing.suite import DeviceContract

PROFILES = load_plugins().profiles


@pytest.fixture(params=PROFILES.names())
def device(request: pytest.FixtureRequest) -> MockDevice:
    return MockDevice(PROFILES.get(request.param))


class TestMockDeviceContract(DeviceContract):
    """The mock device itself passes the device contract, for every shipped profile."""


def test_reports_the_profile_memory() -> None:
    device = MockDevice(PROFILES.get("h200"))
    assert device.memory().total == 141_000_000_000
    assert device.kind == "cuda" and "H200" in device.name


def test_shared_memory_profile_uses_host_total() -> None:
    device = MockDevice(PROFILES.get("cpu"), host_total=8 * 1024**3)
    assert device.memory().total == 8 * 1024**3
    assert device.capabilities.shared_memory


def test_pressure_lowers_free_memory() -> None:
    device = MockDevice(PROFILES.get("h200"))
    device.apply_pressure(0.75)
    mem = device.memory()
    assert mem.free == pytest.approx(0.25 * mem.total, rel=1e-6)
    assert mem.pressure == pytest.approx(0.75, rel=1e-6)


def test_injected_oom_hits_forward_then_clears() -> None:
    device = MockDevice(PROFILES.get("h200"))
    model = device.place(torch.nn.Linear(4, 4))
    device.inject_oom(times=1, min_batch=8)
    model(torch.ones(4, 4))  # below the threshold: runs
    with pytest.raises(torch.OutOfMemoryError) as info:
        model(torch.ones(8, 4))
    assert device.is_oom(info.value)
    assert model(torch.ones(8, 4)).shape == (8, 4)  # armed once only
    assert device.oom_raised == 1
