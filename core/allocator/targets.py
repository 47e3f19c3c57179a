"""Which devices a job may be planned on, each with the profile that describes it.

Detected devices come from the runtime; a profile whose hardware is absent (``--profile``
or ``HWKIT_PROFILE`` naming hardware this machine lacks) becomes an
:class:`~hwkit.absent.AbsentDevice`, so the plan can be shown and is marked not present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwkit.absent import AbsentDevice
from hwkit.hardware_profile import HardwareProfile, load_profile

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.runtime import Runtime


@dataclass(frozen=True)
class Target:
    """A device to plan on, the profile that describes it, and whether it is really here."""

    device: Device
    profile: HardwareProfile
    present: bool


def resolve_targets(
    devices: list[Device] | None,
    runtime: Runtime | None,
    profile: str | HardwareProfile | None = None,
) -> list[Target]:
    """Devices with their profiles: the given ones, the runtime's, or the profile's."""
    if devices is not None and profile is None:
        out = []
        for device in devices:
            prof = getattr(device, "profile", None)
            if not isinstance(prof, HardwareProfile):
                prof = _runtime(runtime).profile_for(device)
            out.append(Target(device, prof, device.present))
        return out
    runtime = _runtime(runtime)
    if profile is not None:
        prof = _profile(runtime, profile) if isinstance(profile, str) else profile
        pool = devices if devices is not None else runtime.devices()
        here = [d for d in pool if prof.matches(d) and d.present]
        if here:
            return [Target(d, prof, True) for d in here]
        return [Target(absent(prof), prof, False)]
    active = runtime.active_profile
    if active.source == "env":
        if active.present and active.device_id:
            device = runtime.device(active.device_id)
            return [Target(device, active.profile, device.present)]
        return [Target(absent(active.profile), active.profile, False)]
    return [Target(d, runtime.profile_for(d), d.present) for d in runtime.devices()]


def _profile(runtime: Runtime, name: str) -> HardwareProfile:
    """A registered profile by name, or one read from a TOML file path."""
    if name.endswith(".toml") or "/" in name:
        return load_profile(Path(name).expanduser())
    return runtime.plugins.profiles.get(name)


def absent(profile: HardwareProfile) -> AbsentDevice:
    from hwkit.runtime import host_memory_total

    return AbsentDevice(profile, host_total=host_memory_total())


def _runtime(runtime: Runtime | None) -> Runtime:
    if runtime is not None:
        return runtime
    from hwkit.runtime import current

    return current()
