"""The Device and Backend contracts, and the values they report.

A Device is one accelerator (or the CPU) as hwkit sees it. Torch is imported only inside
methods that place or synchronise, so describing hardware stays cheap.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Canonical dtype names used across hwkit (torch's spelling).
DTYPES = ("float32", "bfloat16", "float16", "float8", "int8", "int4")


@dataclass(frozen=True)
class MemoryTraits:
    """How a device's memory behaves beyond the tensors a job holds; the allocator adds these.

    ``runtime_overhead``: bytes a process holds before any model (driver context and library
    workspaces; on a CPU the interpreter with torch imported). ``fragmentation``: share of
    the transient parts a caching allocator loses to fragmentation. ``heap_retention``: share
    of the freed activations a host heap keeps mapped (glibc on a CPU). Profiles state them.
    """

    runtime_overhead: int = 1024**3
    fragmentation: float = 0.0
    heap_retention: float = 0.0


# Inference runtimes hwkit knows by name; a plugin may add its own.
RUNTIMES = ("transformers", "llama.cpp", "openvino")


@dataclass(frozen=True)
class Capabilities:
    """What a device can run; the allocator reads only these, never a backend's name.

    ``quantization`` lists the weight-quantisation kernels usable for loading and training
    (``nf4``, ``int8``: bitsandbytes on CUDA/XPU); ``attention`` the attention
    implementations (transformers' names); ``runtimes`` the inference runtimes that can run
    a model here (``transformers``, ``llama.cpp``, ``openvino`` or a plugin's own).
    """

    dtypes: tuple[str, ...]
    features: tuple[str, ...] = ()
    can_train: bool = True
    shared_memory: bool = False  # memory is the host's (iGPU, NPU, CPU)
    compute_capability: str | None = None
    quantization: tuple[str, ...] = ()
    attention: tuple[str, ...] = ("sdpa", "eager")
    runtimes: tuple[str, ...] = ("transformers",)

    def supports(self, dtype: str) -> bool:
        return dtype in self.dtypes

    def runs(self, runtime: str) -> bool:
        return runtime in self.runtimes


@dataclass(frozen=True)
class MemorySnapshot:
    """Live memory in bytes. ``used_by_us`` is what this process holds, where known."""

    total: int
    free: int
    used_by_us: int | None = None

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def pressure(self) -> float:
        """Fraction of the device in use, 0..1."""
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.used / self.total))


@dataclass(frozen=True)
class Telemetry:
    """What the hardware reports of itself; ``None`` where it does not."""

    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """A JSON-ready description of a device (for doctor, plans and run metadata)."""

    id: str
    kind: str
    index: int
    name: str
    capabilities: Capabilities
    memory: MemorySnapshot
    telemetry: Telemetry = field(default_factory=Telemetry)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Device(ABC):
    """One accelerator or the CPU. Subclasses set ``kind``, ``index`` and ``name``.

    ``present`` is False for a device that stands for hardware this machine does not have
    (planning for a profile; :class:`hwkit.absent.AbsentDevice`): a plan on it can be shown
    but not run.
    """

    kind: str
    index: int = 0
    name: str
    present: bool = True

    @property
    def id(self) -> str:
        """Stable identifier such as ``cuda:0``."""
        return f"{self.kind}:{self.index}"

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def memory(self) -> MemorySnapshot:
        """Live memory; cheap enough to call at every training step."""

    def telemetry(self) -> Telemetry:
        return Telemetry()

    def details(self) -> dict[str, Any]:
        """Backend-specific facts worth showing (driver, ISA, compute capability)."""
        return {}

    def torch_device(self) -> torch.device | None:
        """The torch device to place tensors on; ``None`` for OpenVINO-only devices (NPU)."""
        import torch

        return torch.device(self.kind, self.index)

    def place(self, obj: Any) -> Any:
        """Move a torch module or tensor onto this device."""
        target = self.torch_device()
        if target is None:
            raise TypeError(f"{self.id} runs OpenVINO-compiled models only; it has no torch device")
        return obj.to(target)

    def synchronize(self) -> None:  # noqa: B027 - a no-op is right for synchronous devices
        """Wait for queued work (no-op where execution is synchronous)."""

    def empty_cache(self) -> None:  # noqa: B027 - a no-op is right without a caching allocator
        """Return cached allocator blocks to the driver (no-op where there is no cache)."""

    def autocast(self, dtype: str | None) -> contextlib.AbstractContextManager[Any]:
        """An autocast context for ``dtype``; a null context for float32 or ``None``."""
        if dtype in (None, "float32"):
            return contextlib.nullcontext()
        import torch

        target = self.torch_device()
        if target is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=target.type, dtype=getattr(torch, dtype))

    def is_oom(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this device running out of memory."""
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return False
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            id=self.id,
            kind=self.kind,
            index=self.index,
            name=self.name,
            capabilities=self.capabilities,
            memory=self.memory(),
            telemetry=self.telemetry(),
            details=self.details(),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.name!r}>"


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend found devices, and why not when it did not."""

    available: bool
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """A plugin that finds devices of one family.

    Detection must be cheap and must not create a device context just to look (use the
    driver's management library, as Accelerate's NVML check does). Results are cached.
    """

    name: str  # registry name, e.g. "cuda"
    kind: str  # the device kind it yields; usually equal to ``name``

    def __init__(self) -> None:
        self._status: BackendStatus | None = None
        self._devices: list[Device] | None = None

    @abstractmethod
    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        """Find devices once. Return an unavailable status with a reason when none."""

    def _ensure(self) -> None:
        if self._status is None:
            try:
                self._status, self._devices = self._detect()
            except Exception as exc:  # a detection bug must not take doctor down
                self._status = BackendStatus(
                    False, f"detection failed: {type(exc).__name__}: {exc}"
                )
                self._devices = []

    def status(self) -> BackendStatus:
        self._ensure()
        assert self._status is not None
        return self._status

    def devices(self) -> list[Device]:
        self._ensure()
        return list(self._devices or [])

    def refresh(self) -> None:
        """Forget cached detection (hot-plug, tests)."""
        self._status, self._devices = None, None
