"""A CPU-backed device that reports what a hardware profile says.

It lets every plugin run on this machine while believing it has an H200's 141 GB or an
iGPU's shared memory, and it can be told to come under memory pressure or to run out of
memory on the next forward pass, the way a real device does.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from hwkit.absent import AbsentDevice
from hwkit.device import Backend, BackendStatus, Device, MemorySnapshot, Telemetry
from hwkit.hardware_profile import HardwareProfile

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

DEFAULT_HOST_TOTAL = 64 * 1024**3


class MockDevice(AbsentDevice):
    """Runs on CPU tensors; identity, capabilities and memory come from ``profile``.

    On its own it stands for hardware this machine lacks (``present`` False, as for
    :class:`hwkit.absent.AbsentDevice`); a :class:`MockBackend` makes it "detected", so a
    test runtime plans on it and runs the planned work on it as on the real device.
    """

    def __init__(
        self,
        profile: HardwareProfile,
        index: int = 0,
        *,
        host_total: int = DEFAULT_HOST_TOTAL,
        present: bool = False,
    ) -> None:
        super().__init__(profile, index, host_total=host_total)
        self.present = present
        self._used = 0
        self._oom_remaining = 0
        self._oom_min_batch = 0
        self.oom_raised = 0
        self.cache_frees = 0
        self.forwards = 0  # forward passes of modules placed here

    # -- what it reports ----------------------------------------------------------------
    def memory(self) -> MemorySnapshot:
        return MemorySnapshot(
            total=self._total, free=max(0, self._total - self._used), used_by_us=0
        )

    def telemetry(self) -> Telemetry:
        return Telemetry(utilization_pct=0.0, temperature_c=40.0, power_w=None)

    def details(self) -> dict[str, Any]:
        return {"mock": True, "profile": self.profile.name}

    # -- what tests make it do ------------------------------------------------------------
    def set_used(self, used_bytes: int) -> None:
        """Pretend other processes hold ``used_bytes`` of this device."""
        self._used = max(0, min(self._total, int(used_bytes)))

    def apply_pressure(self, fraction: float) -> None:
        """Pretend the device is ``fraction`` (0..1) full."""
        self.set_used(int(self._total * fraction))

    def inject_oom(self, times: int = 1, *, min_batch: int = 0) -> None:
        """Raise an out-of-memory error on the next ``times`` forward passes whose batch
        has at least ``min_batch`` rows (0: any batch)."""
        self._oom_remaining = times
        self._oom_min_batch = min_batch

    def check_allocation(self, batch_size: int) -> None:
        """Raise the injected OOM if armed; called from the forward pre-hook."""
        self.forwards += 1
        if self._oom_remaining > 0 and batch_size >= self._oom_min_batch:
            self._oom_remaining -= 1
            self.oom_raised += 1
            import torch

            raise torch.OutOfMemoryError(
                f"{self.id} (mock {self.profile.name}) out of memory: "
                f"injected at batch {batch_size}"
            )

    # -- torch --------------------------------------------------------------------------
    def torch_device(self) -> Any:
        import torch

        return torch.device("cpu")

    def place(self, obj: Any) -> Any:
        import torch

        obj = obj.to("cpu")
        if isinstance(obj, torch.nn.Module) and not getattr(obj, "_hwkit_mock_hooked", False):
            obj.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
            obj._hwkit_mock_hooked = True  # type: ignore[assignment]
        return obj

    def _pre_forward(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.check_allocation(_batch_size(args, kwargs))

    def empty_cache(self) -> None:
        self.cache_frees += 1

    def autocast(self, dtype: str | None) -> contextlib.AbstractContextManager[Any]:
        # CPU tensors: keep float32 math so mock runs are fast and deterministic.
        return contextlib.nullcontext()


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for value in (*args, *kwargs.values()):
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0])
    return 1


class MockBackend(Backend):
    """A backend whose devices are :class:`MockDevice` s for the given profiles."""

    name = "mock"
    kind = "mock"

    def __init__(self, *profiles: HardwareProfile) -> None:
        super().__init__()
        self._profiles = profiles

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        if not self._profiles:
            return BackendStatus(False, "no profiles given to the mock backend"), []
        return BackendStatus(True, details={"mock": True}), [
            MockDevice(p, index=i, present=True) for i, p in enumerate(self._profiles)
        ]


def mock_device(profile: str | HardwareProfile = "cpu", **kwargs: Any) -> MockDevice:
    """A mock device for a registered profile name (or a profile object)."""
    if isinstance(profile, HardwareProfile):
        return MockDevice(profile, **kwargs)
    from hwkit.runtime import current

    return MockDevice(current().plugins.profiles.get(profile), **kwargs)


def mock_runtime(*profiles: str | HardwareProfile, plugins: Any = None) -> Runtime:
    """A runtime whose only hardware is mock devices for ``profiles`` (the first one is
    the active profile, as ``HWKIT_PROFILE`` would make it), with every installed plugin.

    Jobs planned on it land on the mock devices and run there on CPU tensors, so a test
    sees where a plan put the work: ``mock_runtime("rtx5090")`` is a machine with an
    RTX 5090 in it.
    """
    import os

    from hwkit.hardware_profile import PROFILE_ENV
    from hwkit.runtime import Runtime, current

    manager = plugins if plugins is not None else current().plugins
    resolved = [p if isinstance(p, HardwareProfile) else manager.profiles.get(p) for p in profiles]
    if not resolved:
        raise ValueError("mock_runtime needs at least one profile")
    env = {**os.environ, PROFILE_ENV: resolved[0].name}
    runtime = Runtime(manager, env, registered_hardware=False)
    runtime.attach_backend(MockBackend(*resolved))
    return runtime
