"""The NPU backend: Intel NPUs (Meteor Lake, Arrow Lake, Lunar Lake "AI Boost") via OpenVINO.

An NPU has no torch device: it runs OpenVINO-compiled models, fp16 and int8, inference
only. On Linux the ``intel_vpu`` kernel driver creates ``/dev/accel/accel*``; when that is
absent, detection says so without importing OpenVINO (which costs about half a second).
Otherwise ``openvino.Core().available_devices`` decides, and the device's name,
architecture and memory come from its properties where the NPU plugin reports them.

The Neural Compute Stick 2 (MYRIAD) left OpenVINO in 2023.0: there is no backend for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hwkit.device import Backend, BackendStatus, Capabilities, Device, MemorySnapshot
from hwkit.hookspecs import hookimpl
from hwkit.log import get_logger

log = get_logger(__name__)

DEV_ACCEL = Path("/dev/accel")
SYS_ACCEL = Path("/sys/class/accel")
INTEL_PCI_VENDOR = "0x8086"
DRIVER_HINT = "load the intel_vpu kernel driver, Linux 6.3+, which creates /dev/accel/accel0"
USERSPACE_HINT = (
    "install the NPU user-space driver and Level Zero from github.com/intel/linux-npu-driver"
)
# NPU_PLATFORM / DEVICE_ARCHITECTURE -> generation, from Intel's NPU driver documentation.
GENERATIONS = {
    "3720": "NPU 3 (Meteor Lake, Arrow Lake)",
    "4000": "NPU 4 (Lunar Lake)",
}
# Properties read once at detection when the plugin lists them in SUPPORTED_PROPERTIES.
STATIC_PROPERTIES = (
    "FULL_DEVICE_NAME",
    "DEVICE_ARCHITECTURE",
    "NPU_PLATFORM",
    "NPU_DRIVER_VERSION",
    "NPU_COMPILER_VERSION",
    "NPU_MAX_TILES",
    "DEVICE_GOPS",
    "OPTIMIZATION_CAPABILITIES",
    "DEVICE_UUID",
)
NPU_CAPABILITIES = Capabilities(
    dtypes=("float16", "int8"),
    features=(),
    can_train=False,
    shared_memory=True,
    attention=(),
    runtimes=("openvino",),
)


# -- pure functions (unit-tested without hardware) --------------------------------------------


def accel_nodes(dev: Path = DEV_ACCEL) -> list[Path]:
    """``/dev/accel/accel*`` nodes (any vendor: Intel NPU, AMD XDNA, Habana...)."""
    try:
        return sorted(p for p in dev.glob("accel*") if p.name[5:].isdigit())
    except OSError:
        return []


def accel_vendor(node: Path, sys_accel: Path = SYS_ACCEL) -> str | None:
    """PCI vendor of an accel node from sysfs (``0x8086`` for Intel); ``None`` if unknown."""
    try:
        return (sys_accel / node.name / "device" / "vendor").read_text().strip().lower()
    except OSError:
        return None


def npu_display_name(full_name: str, platform: str | None) -> str:
    """``Intel(R) AI Boost`` plus its platform, so profiles can tell Meteor from Lunar Lake."""
    return f"{full_name} (NPU {platform})" if platform else full_name


def _as_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


# -- device and backend --------------------------------------------------------------------------


class NPUDevice(Device):
    """One NPU as OpenVINO names it (``NPU``, or ``NPU.N`` with several)."""

    kind = "npu"

    def __init__(self, index: int, ov_name: str, core: Any, props: dict[str, Any]) -> None:
        self.index = index
        self.ov_device = ov_name
        self._core = core
        self._props = props
        platform = str(props.get("NPU_PLATFORM") or props.get("DEVICE_ARCHITECTURE") or "") or None
        self._platform = platform
        self.name = npu_display_name(str(props.get("FULL_DEVICE_NAME") or "Intel NPU"), platform)
        self._supported: set[str] = set(props.get("_supported", ()))

    @property
    def capabilities(self) -> Capabilities:
        return NPU_CAPABILITIES

    def _read(self, key: str) -> Any:
        if key not in self._supported:
            return None
        try:
            return self._core.get_property(self.ov_device, key)
        except RuntimeError:
            return None

    def memory(self) -> MemorySnapshot:
        """The NPU allocates from host memory; the plugin's own figures narrow it where given."""
        import psutil

        vm = psutil.virtual_memory()
        total = _as_int(self._read("NPU_DEVICE_TOTAL_MEM_SIZE")) or int(vm.total)
        ours = _as_int(self._read("NPU_DEVICE_ALLOC_MEM_SIZE")) or 0
        free = max(0, min(total - ours, int(vm.available)))
        return MemorySnapshot(total=total, free=free, used_by_us=ours)

    def details(self) -> dict[str, Any]:
        shown = {k: _jsonable(v) for k, v in self._props.items() if not k.startswith("_")}
        return {
            "openvino_device": self.ov_device,
            "generation": GENERATIONS.get(self._platform or "", "unknown"),
            "inference_only": True,
            **shown,
        }

    def torch_device(self) -> None:
        return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _static_props(core: Any, ov_name: str) -> dict[str, Any]:
    try:
        supported = [str(p) for p in core.get_property(ov_name, "SUPPORTED_PROPERTIES")]
    except RuntimeError:
        supported = []
    props: dict[str, Any] = {"_supported": supported}
    for key in STATIC_PROPERTIES:
        if key in supported:
            try:
                props[key] = core.get_property(ov_name, key)
            except RuntimeError as exc:  # listed but not readable on this driver
                log.debug("npu.property_unreadable", device=ov_name, key=key, error=str(exc))
    return props


class NPUBackend(Backend):
    """Intel NPUs through OpenVINO; inference only, no torch device."""

    name = "npu"
    kind = "npu"

    def __init__(self, dev_accel: Path = DEV_ACCEL, sys_accel: Path = SYS_ACCEL) -> None:
        super().__init__()
        self.dev_accel = dev_accel
        self.sys_accel = sys_accel

    def _precheck(self) -> tuple[str | None, list[Path]]:
        """A reason to stop before importing OpenVINO, or the accel nodes found."""
        if sys.platform == "darwin":
            return "no NPU on macOS: Intel NPUs are supported on Linux and Windows", []
        if not sys.platform.startswith("linux"):
            return None, []  # Windows: no cheap check, ask OpenVINO
        if not self.dev_accel.is_dir():
            return f"no NPU driver: {self.dev_accel} is absent ({DRIVER_HINT})", []
        nodes = accel_nodes(self.dev_accel)
        if not nodes:
            return f"no NPU driver: {self.dev_accel} has no accel* node ({DRIVER_HINT})", []
        vendors = {node.name: accel_vendor(node, self.sys_accel) for node in nodes}
        if all(v is not None and v != INTEL_PCI_VENDOR for v in vendors.values()):
            listing = ", ".join(f"{name} (vendor {v})" for name, v in vendors.items())
            return (
                f"no Intel NPU: {self.dev_accel} holds only other vendors' devices: {listing}",
                [],
            )
        return None, [n for n in nodes if vendors[n.name] in (None, INTEL_PCI_VENDOR)]

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        reason, nodes = self._precheck()
        if reason:
            return BackendStatus(False, reason), []
        found: dict[str, Any] = {"accel_nodes": [str(n) for n in nodes]}
        try:
            import openvino as ov
        except ImportError:
            return BackendStatus(
                False, "openvino is not installed: pip install openvino", found
            ), []
        core = ov.Core()
        listed = [str(d) for d in core.available_devices]
        found["openvino"] = ov.__version__.split("-")[0]
        found["openvino_devices"] = listed
        npus = [d for d in listed if d == "NPU" or d.startswith("NPU.")]
        if not npus:
            only = ", ".join(listed) or "no device"
            reason = f"no NPU: OpenVINO {found['openvino']} lists only {only}"
            blocked = [str(n) for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
            if blocked:
                reason += (
                    f"; no permission to open {blocked[0]}: add your user to the 'render' group"
                )
            elif nodes:
                reason += f" although {nodes[0]} exists: {USERSPACE_HINT}"
            return BackendStatus(False, reason, found), []
        devices: list[Device] = [
            NPUDevice(index, ov_name, core, _static_props(core, ov_name))
            for index, ov_name in enumerate(npus)
        ]
        log.debug("npu.detected", devices=[d.name for d in devices])
        return BackendStatus(True, details=found), devices


@hookimpl
def hwkit_register_backends(register: Any) -> None:
    register(NPUBackend)
