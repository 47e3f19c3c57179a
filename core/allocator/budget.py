"""How many bytes a job may plan for on one device, and why.

Budget = the lesser of the profile's budget (a share of capacity the profile allows) and
the live free memory less a safety margin, less what other jobs already planned on the
same device. Every figure goes into the reason string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hwkit.device import Device
from hwkit.hardware_profile import HardwareProfile

GB = 1_000_000_000
MiB = 1024**2
SAFETY_FRACTION = 0.05  # of the device's total, kept free for the driver and other processes
SAFETY_MIN = 256 * MiB


def gb(n: int | float) -> str:
    """Bytes as decimal GB, the unit the profiles use."""
    return f"{n / GB:.2f} GB"


@dataclass(frozen=True)
class Budget:
    """The bytes one job may use on one device, with how they were derived."""

    bytes: int
    profile_budget: int
    live_free: int
    margin: int
    reserved: int

    @property
    def reason(self) -> str:
        text = (
            f"min(profile budget {gb(self.profile_budget)}, live free {gb(self.live_free)} "
            f"- safety margin {gb(self.margin)})"
        )
        if self.reserved:
            text += f" - {gb(self.reserved)} already planned on this device"
        return text + f" = {gb(self.bytes)}"


def device_budget(device: Device, profile: HardwareProfile, reserved: int = 0) -> Budget:
    """The budget on ``device`` now; raises ConfigError when the profile has no memory figure."""
    mem = device.memory()
    profile_budget = profile.budget_bytes(host_total=mem.total)
    margin = max(int(mem.total * SAFETY_FRACTION), SAFETY_MIN)
    live = max(0, mem.free - margin)
    return Budget(
        bytes=max(0, min(profile_budget, live) - reserved),
        profile_budget=profile_budget,
        live_free=mem.free,
        margin=margin,
        reserved=reserved,
    )


def reserved_for(device_id: str, reserved: int | Mapping[str, int] | None) -> int:
    """Bytes already planned on ``device_id`` (an int applies to every device)."""
    if reserved is None:
        return 0
    if isinstance(reserved, int):
        return reserved
    return int(reserved.get(device_id, 0))
