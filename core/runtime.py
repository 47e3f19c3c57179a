"""The runtime: plugin manager + detected devices + active profile, one per process.

Every job starts here (``hwkit.jobs``): the CLI builds the runtime once and passes it down;
library calls that are not handed one use :func:`current`, the process's runtime.
Plugins never build their own.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwkit.errors import UnknownNameError
from hwkit.plugin_manager import PluginManager, load_plugins

if TYPE_CHECKING:
    from hwkit.device import Backend, Device
    from hwkit.hardware_profile import ActiveProfile, HardwareProfile

PROFILE_ENV = "HWKIT_PROFILE"  # hwkit.hardware_profile's, without importing pydantic here


@dataclass
class Runtime:
    plugins: PluginManager
    env: Mapping[str, str] | None = None
    _backends: dict[str, Backend] = field(default_factory=dict)
    _attached: list[Backend] = field(default_factory=list)
    registered_hardware: bool = True  # False: only attached backends (mock hardware)

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        disabled: set[str] | None = None,
        *,
        profile: str | None = None,
    ) -> Runtime:
        """Load every plugin; ``profile`` (a name or TOML path) overrides ``HWKIT_PROFILE``."""
        if profile:
            env = {**(os.environ if env is None else env), PROFILE_ENV: profile}
        return cls(load_plugins(disabled), env)

    def with_profile(self, profile: str | None) -> Runtime:
        """This runtime planning for ``profile`` (a name or TOML path) instead of the
        active one; plugins and detected devices are shared, not loaded again."""
        if not profile:
            return self
        env = {**(os.environ if self.env is None else self.env), PROFILE_ENV: profile}
        return Runtime(self.plugins, env, self._backends, self._attached, self.registered_hardware)

    # -- devices ------------------------------------------------------------------------------
    def backend(self, name: str) -> Backend:
        """The (cached) backend instance registered (or attached) as ``name``."""
        for attached in self._attached:
            if attached.name == name:
                return attached
        if name not in self._backends:
            self._backends[name] = self.plugins.backends.get(name)()
        return self._backends[name]

    def backends(self) -> list[Backend]:
        registered = self.plugins.backends.names() if self.registered_hardware else []
        return [self.backend(name) for name in registered] + list(self._attached)

    def attach_backend(self, backend: Backend) -> None:
        """Add a backend instance that no entry point registers (the testing kit's mock
        hardware, an embedding application's own device); forgets the cached profile."""
        self._attached.append(backend)
        self.__dict__.pop("active_profile", None)

    def devices(self) -> list[Device]:
        """Every device of every available backend."""
        found: list[Device] = []
        for backend in self.backends():
            if backend.status().available:
                found.extend(backend.devices())
        return found

    def device(self, device_id: str) -> Device:
        devices = {d.id: d for d in self.devices()}
        if device_id not in devices:
            raise UnknownNameError("device", device_id, list(devices))
        return devices[device_id]

    # -- profiles -----------------------------------------------------------------------------
    @functools.cached_property
    def active_profile(self) -> ActiveProfile:
        from hwkit.hardware_profile import select_profile

        return select_profile(self.plugins.profiles, self.devices(), self.env, host_memory_total())

    def profile_for(self, device: Device) -> HardwareProfile:
        from hwkit.hardware_profile import profile_for

        return profile_for(device, self.plugins.profiles)


def host_memory_total() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    """The process's runtime, loaded on first use (library calls not handed one)."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime.load()
        return _current


def set_current(runtime: Runtime | None) -> None:
    """Make ``runtime`` the process's (the CLI does, so plugin code sees the same one)."""
    global _current
    with _lock:
        _current = runtime
