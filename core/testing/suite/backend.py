"""Contract tests for :class:`hwkit.device.Backend`. Fixture: ``backend`` (an instance)."""

from __future__ import annotations

import time

from hwkit.device import Backend, BackendStatus, Device


class BackendContract:
    def test_identity(self, backend: Backend) -> None:
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.kind, str) and backend.kind

    def test_status_explains_unavailability(self, backend: Backend) -> None:
        status = backend.status()
        assert isinstance(status, BackendStatus)
        if status.available:
            assert backend.devices(), "an available backend must yield at least one device"
        else:
            assert status.reason and status.reason.strip(), "an unavailable backend must say why"
            assert backend.devices() == []

    def test_detection_is_cached_and_cheap(self, backend: Backend) -> None:
        first = backend.status()
        start = time.perf_counter()
        again = backend.status()
        assert again is first
        assert time.perf_counter() - start < 0.05

    def test_refresh_redetects(self, backend: Backend) -> None:
        before = backend.status()
        backend.refresh()
        after = backend.status()
        assert after.available == before.available
        assert [d.id for d in backend.devices()] == [d.id for d in backend.devices()]

    def test_devices_are_devices_with_unique_ids(self, backend: Backend) -> None:
        devices = backend.devices()
        assert all(isinstance(d, Device) for d in devices)
        ids = [d.id for d in devices]
        assert len(ids) == len(set(ids))
        for device in devices:
            assert device.id.startswith(f"{device.kind}:")
