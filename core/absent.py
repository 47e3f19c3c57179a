"""The device of absent hardware: what a profile describes, when this machine lacks it.

Planning for a profile you do not have (``HWKIT_PROFILE=h200`` on a laptop) needs a device
to plan on. This one reports the profile's identity, capabilities and memory, says
``present = False`` so every plan made on it is marked as such, and refuses to run
anything: there is nothing to place a tensor on.
"""

from __future__ import annotations

from typing import Any

from hwkit.device import Capabilities, Device, MemorySnapshot
from hwkit.hardware_profile import HardwareProfile


class AbsentDevice(Device):
    """Hardware described by ``profile``, not detected on this machine."""

    present = False

    def __init__(self, profile: HardwareProfile, index: int = 0, *, host_total: int) -> None:
        self.profile = profile
        self.kind = profile.kind
        self.index = index
        self.name = profile.display_name
        self._total = profile.capacity_bytes(host_total)
        self._caps = profile.compute.capabilities(shared_memory=profile.memory.shared_with_host)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory(self) -> MemorySnapshot:
        """The profile's capacity, all of it free: nothing of ours runs there."""
        return MemorySnapshot(total=self._total, free=self._total, used_by_us=0)

    def details(self) -> dict[str, Any]:
        return {"present": False, "profile": self.profile.name}

    def torch_device(self) -> Any:
        return None

    def place(self, obj: Any) -> Any:
        raise TypeError(
            f"{self.id} ({self.profile.display_name}) is not in this machine: "
            "a plan for it can be shown, not run"
        )
