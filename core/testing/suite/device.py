"""Contract tests for :class:`hwkit.device.Device`. Fixture: ``device``."""

from __future__ import annotations

import contextlib
import json

import pytest

from hwkit.device import Capabilities, Device, MemorySnapshot, Telemetry


class DeviceContract:
    def test_identity(self, device: Device) -> None:
        assert device.kind and device.name
        assert device.index >= 0
        assert device.id == f"{device.kind}:{device.index}"

    def test_capabilities(self, device: Device) -> None:
        caps = device.capabilities
        assert isinstance(caps, Capabilities)
        assert caps.dtypes, "a device runs at least one dtype"
        assert all(isinstance(d, str) for d in caps.dtypes)
        assert isinstance(caps.can_train, bool)

    def test_memory_snapshot_is_consistent(self, device: Device) -> None:
        mem = device.memory()
        assert isinstance(mem, MemorySnapshot)
        assert mem.total > 0
        assert 0 <= mem.free <= mem.total
        assert 0.0 <= mem.pressure <= 1.0

    def test_telemetry_types(self, device: Device) -> None:
        tel = device.telemetry()
        assert isinstance(tel, Telemetry)
        for value in (tel.utilization_pct, tel.temperature_c, tel.power_w):
            assert value is None or isinstance(value, (int, float))

    def test_info_is_json_ready(self, device: Device) -> None:
        data = device.info().to_dict()
        assert json.loads(json.dumps(data, default=str))["id"] == device.id

    def test_place_runs_a_module_or_refuses_clearly(self, device: Device) -> None:
        torch = pytest.importorskip("torch")
        module = torch.nn.Linear(4, 2)
        if device.torch_device() is None:
            assert not device.capabilities.can_train
            with pytest.raises(TypeError):
                device.place(module)
            return
        placed = device.place(module)
        x = device.place(torch.ones(3, 4))
        with device.autocast(None):
            out = placed(x)
        assert tuple(out.shape) == (3, 2)
        device.synchronize()
        device.empty_cache()

    def test_autocast_is_a_context_manager(self, device: Device) -> None:
        for dtype in (None, "float32", *device.capabilities.dtypes):
            if dtype in ("int8", "int4", "float8"):
                continue
            ctx = device.autocast(dtype)
            assert isinstance(ctx, contextlib.AbstractContextManager)
            with ctx:
                pass

    def test_recognises_out_of_memory(self, device: Device) -> None:
        torch = pytest.importorskip("torch")
        assert device.is_oom(torch.OutOfMemoryError("out of memory"))
        assert not device.is_oom(ValueError("bad value"))
