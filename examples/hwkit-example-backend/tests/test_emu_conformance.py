"""The example backend runs hwkit's conformance kit: subclass a contract, supply its fixture."""

from __future__ import annotations

import pytest
from hwkit_example_backend import EmuBackend, EmuDevice

from hwkit.runtime import current
from hwkit.testing.suite import BackendContract, DeviceContract


class TestEmuBackend(BackendContract):
    @pytest.fixture
    def backend(self) -> EmuBackend:
        return EmuBackend()


class TestEmuDevice(DeviceContract):
    @pytest.fixture
    def device(self) -> EmuDevice:
        return EmuDevice(0)


def test_installed_by_entry_point_with_its_profile() -> None:
    pm = current().plugins
    assert pm.backends.get("emu") is EmuBackend
    assert pm.backends.owner("emu") == "emu"
    assert pm.profiles.get("emu").display_name == "Example Emulated Accelerator"


def test_unavailable_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWKIT_EMU_DISABLE", "1")
    status = EmuBackend().status()
    assert not status.available
    assert "HWKIT_EMU_DISABLE" in (status.reason or "")
