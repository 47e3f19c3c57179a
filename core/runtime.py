"""The runtime: plugin manager + detected devices + active profile, built once per process.

``config -> runtime -> allocator.plan(job) -> plugin.run(plan) -> artifacts`` starts here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from hwkit.device import Backend, Device
from hwkit.hardware_profile import ActiveProfile, HardwareProfile, profile_for, select_profile
from hwkit.plugin_manager import PluginManager, load_plugins


@dataclass
class Runtime:
    plugins: PluginManager
    env: Mapping[str, str] | None = None
    _backends: dict[str, Backend] = field(default_factory=dict)

    @classmethod
    def load(
        cls, env: Mapping[str, str] | None = None, disabled: set[str] | None = None
    ) -> Runtime:
        return cls(load_plugins(disabled), env)

    def backend(self, name: str) -> Backend:
        """The (cached) backend instance registered as ``name``."""
        if name not in self._backends:
            self._backends[name] = self.plugins.backends.get(name)()
        return self._backends[name]

    def backends(self) -> list[Backend]:
        return [self.backend(name) for name in self.plugins.backends.names()]

    def devices(self) -> list[Device]:
        """Every device of every available backend."""
        found: list[Device] = []
        for backend in self.backends():
            if backend.status().available:
                found.extend(backend.devices())
        return found

    def device(self, device_id: str) -> Device:
        from hwkit.errors import UnknownNameError

        devices = {d.id: d for d in self.devices()}
        if device_id not in devices:
            raise UnknownNameError("device", device_id, list(devices))
        return devices[device_id]

    @functools.cached_property
    def active_profile(self) -> ActiveProfile:
        return select_profile(self.plugins.profiles, self.devices(), self.env, host_memory_total())

    def profile_for(self, device: Device) -> HardwareProfile:
        return profile_for(device, self.plugins.profiles)


def host_memory_total() -> int:
    return int(psutil.virtual_memory().total)
