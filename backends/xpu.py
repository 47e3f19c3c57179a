"""The XPU backend: Intel GPUs (Arc discrete, Arc/Iris integrated, Data Center Max) via torch.xpu.

Native ``torch.xpu`` is the path; Intel Extension for PyTorch is imported only when it is
installed *and* this torch has no native XPU (IPEX is archived upstream). On Linux a
sysfs look for a DRM render node of PCI vendor 0x8086 settles "no Intel GPU" without
importing torch. Integrated GPUs share the host's memory, so they report
``shared_memory=True`` and a memory budget taken from host memory (psutil).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwkit.device import Backend, BackendStatus, Capabilities, Device, MemorySnapshot, Telemetry
from hwkit.hookspecs import hookimpl
from hwkit.log import get_logger

log = get_logger(__name__)

INTEL_PCI_VENDOR = "0x8086"
SYS_DRM = Path("/sys/class/drm")
WSL_GPU = Path("/dev/dxg")  # WSL2's GPU paravirtualisation device
TORCH_XPU_HINT = "install an XPU build of torch: pip install torch --index-url https://download.pytorch.org/whl/xpu"
DRIVER_HINT = (
    "install Intel's GPU compute runtime (Level Zero and OpenCL: intel-level-zero-gpu, "
    "intel-opencl-icd) and make sure you are in the 'render' group"
)


# -- pure functions (unit-tested without hardware) --------------------------------------------


@dataclass(frozen=True)
class RenderNode:
    """One DRM render node of an Intel GPU, as sysfs lists it."""

    node: str  # e.g. renderD128
    pci_address: str  # e.g. 0000:00:02.0
    pci_device_id: str  # e.g. 0x7d55

    @property
    def integrated(self) -> bool:
        """Intel's iGPU sits at 00:02.0 on the root bus; discrete cards sit behind a bridge."""
        parts = self.pci_address.split(":")
        return len(parts) == 3 and parts[1] == "00" and parts[2] == "02.0"


def intel_render_nodes(drm: Path = SYS_DRM) -> list[RenderNode]:
    """Intel render nodes under ``drm`` (``/sys/class/drm``); empty when none or no sysfs."""
    nodes = []
    try:
        entries = sorted(drm.glob("renderD*"))
    except OSError:
        return []
    for entry in entries:
        try:
            vendor = (entry / "device" / "vendor").read_text().strip().lower()
        except OSError:
            continue
        if vendor != INTEL_PCI_VENDOR:
            continue
        try:
            device_id = (entry / "device" / "device").read_text().strip().lower()
        except OSError:
            device_id = "unknown"
        try:
            address = (entry / "device").resolve().name
        except OSError:
            address = "unknown"
        nodes.append(RenderNode(entry.name, address, device_id))
    return nodes


_DISCRETE_NAME = re.compile(r"Arc\(?T?M?\)?\s*(Pro\s*)?[AB]\d{2,3}|Data Center GPU|Flex \d+", re.I)


def integrated_by_name(name: str) -> bool:
    """Whether an Intel GPU name is an integrated part (fallback where torch does not say).

    Discrete: Arc A-/B-series (A770, B580, Pro A60), Data Center GPU Max/Flex. Integrated:
    "Arc Graphics" (Meteor Lake), "Arc 140V" (Lunar Lake), Iris Xe, UHD.
    """
    return _DISCRETE_NAME.search(name) is None


def xpu_capabilities(*, has_fp16: bool, has_xmx: bool, integrated: bool) -> Capabilities:
    """What an Intel GPU runs natively.

    bf16 is native only with XMX (DPAS) units: Arc A/B-series, Lunar Lake's Xe2, Data
    Center Max. The Meteor Lake Arc iGPU has no XMX and emulates bf16, so fp16 is its
    training dtype.
    """
    dtypes = ["float32"]
    if has_xmx:
        dtypes.append("bfloat16")
    if has_fp16:
        dtypes.append("float16")
    dtypes.append("int8")
    return Capabilities(
        dtypes=tuple(dtypes),
        features=("xmx",) if has_xmx else (),
        can_train=True,
        shared_memory=integrated,
        quantization=("nf4", "int8"),  # bitsandbytes' multi-backend XPU kernels
        attention=("sdpa", "eager"),
        runtimes=("transformers", "openvino"),
    )


# -- device and backend --------------------------------------------------------------------------


class XPUDevice(Device):
    """One Intel GPU as torch.xpu numbers it."""

    kind = "xpu"

    def __init__(self, index: int, props: Any, integrated: bool, extra: dict[str, Any]) -> None:
        self.index = index
        self.name = str(props.name)
        self._reported_total = int(getattr(props, "total_memory", 0))
        self._integrated = integrated
        self._extra = extra
        self._caps = xpu_capabilities(
            has_fp16=bool(getattr(props, "has_fp16", True)),
            has_xmx=bool(getattr(props, "has_subgroup_matrix_multiply_accumulate", False)),
            integrated=integrated,
        )
        self._props = {
            key: getattr(props, key)
            for key in (
                "driver_version",
                "platform_name",
                "gpu_eu_count",
                "device_id",
                "architecture",
            )
            if hasattr(props, key)
        }

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _reserved(self) -> int:
        import torch

        if not torch.xpu.is_initialized():
            return 0
        return int(torch.xpu.memory_reserved(self.index))

    def memory(self) -> MemorySnapshot:
        ours = self._reserved()
        if self._integrated:  # the iGPU allocates from host RAM: budget from what the host has
            import psutil

            vm = psutil.virtual_memory()
            return MemorySnapshot(total=int(vm.total), free=int(vm.available), used_by_us=ours)
        import torch

        try:
            free, total = torch.xpu.mem_get_info(self.index)
        except (RuntimeError, AttributeError):
            total, free = self._reported_total, max(0, self._reported_total - ours)
        return MemorySnapshot(total=int(total), free=int(free), used_by_us=ours)

    def telemetry(self) -> Telemetry:
        """Level Zero Sysman readings through torch.xpu where ``pyzes`` is installed."""
        if importlib.util.find_spec("pyzes") is None:
            return Telemetry()
        import torch

        def read(name: str) -> float | None:
            fn = getattr(torch.xpu, name, None)
            if fn is None:
                return None
            try:
                return float(fn(self.index))
            except (RuntimeError, ValueError, OSError):
                return None  # often needs elevated privileges

        return Telemetry(
            utilization_pct=read("utilization"),
            temperature_c=read("temperature"),
            power_w=read("power_draw"),
        )

    def details(self) -> dict[str, Any]:
        return {
            "integrated": self._integrated,
            "reported_total_memory": self._reported_total,
            **self._props,
            **self._extra,
        }

    def torch_device(self) -> Any:
        import torch

        return torch.device("xpu", self.index)

    def synchronize(self) -> None:
        import torch

        torch.xpu.synchronize(self.index)

    def empty_cache(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or not torch.xpu.is_initialized():
            return
        torch.xpu.empty_cache()


def _ipex_version() -> str | None:
    if importlib.util.find_spec("intel_extension_for_pytorch") is None:
        return None
    from importlib import metadata

    try:
        return metadata.version("intel-extension-for-pytorch")
    except metadata.PackageNotFoundError:
        return "unknown"


class XPUBackend(Backend):
    """Intel GPUs through native torch.xpu (IPEX only where torch lacks XPU and IPEX is there)."""

    name = "xpu"
    kind = "xpu"

    def __init__(self, drm_root: Path = SYS_DRM, wsl_gpu: Path = WSL_GPU) -> None:
        super().__init__()
        self.drm_root = drm_root
        self.wsl_gpu = wsl_gpu

    def _precheck(self) -> tuple[str | None, list[RenderNode]]:
        """A reason to stop before importing torch, or the Intel render nodes found."""
        if sys.platform == "darwin":
            return "no XPU on macOS: torch.xpu supports Intel GPUs on Linux and Windows", []
        if not sys.platform.startswith("linux"):
            return None, []  # no cheap check elsewhere: ask torch
        if self.wsl_gpu.exists():
            return None, []  # WSL2 passes GPUs through /dev/dxg, not DRM render nodes
        nodes = intel_render_nodes(self.drm_root)
        if not nodes:
            where = "" if self.drm_root.is_dir() else f"; {self.drm_root} is absent"
            return (
                f"no Intel GPU found (no {self.drm_root} render node with vendor "
                f"{INTEL_PCI_VENDOR}{where})"
            ), []
        return None, nodes

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        reason, nodes = self._precheck()
        if reason:
            return BackendStatus(False, reason), []
        found: dict[str, Any] = {
            "render_nodes": [f"{n.node} {n.pci_address} {n.pci_device_id}" for n in nodes]
        }
        try:
            import torch
        except ImportError:
            return BackendStatus(False, f"torch is not installed: {TORCH_XPU_HINT}", found), []

        ipex = _ipex_version()
        found["ipex"] = ipex
        native = hasattr(torch, "xpu") and torch.xpu._is_compiled()
        if not native and ipex is not None:
            try:  # old torch: IPEX supplies torch.xpu
                import intel_extension_for_pytorch  # noqa: F401
            except Exception as exc:  # a broken IPEX must not take detection down
                found["ipex_error"] = f"{type(exc).__name__}: {exc}"
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            compiled = hasattr(torch, "xpu") and torch.xpu._is_compiled()
            base = (
                f"torch {torch.__version__} has no XPU support (torch.xpu.is_available() is False)"
            )
            if not compiled:
                return BackendStatus(False, f"{base}: {TORCH_XPU_HINT}", found), []
            seen = f" although sysfs lists {', '.join(found['render_nodes'])}" if nodes else ""
            problems = [p for p in (render_node_problem(n.node) for n in nodes) if p]
            hint = problems[0] if problems else DRIVER_HINT
            return BackendStatus(False, f"{base}{seen}: {hint}", found), []

        devices: list[Device] = []
        # torch.xpu numbers devices itself; reading properties initialises the SYCL runtime
        # (no allocation), which is unavoidable: it is the only source of name and memory.
        for index in range(torch.xpu.device_count()):
            props = torch.xpu.get_device_properties(index)
            integrated = getattr(props, "is_integrated_gpu", None)
            if integrated is None:
                integrated = (
                    nodes[0].integrated if len(nodes) == 1 else integrated_by_name(str(props.name))
                )
            extra = {"ipex": ipex} if ipex else {}
            devices.append(XPUDevice(index, props, bool(integrated), extra))
        details = {**found, "torch_xpu": getattr(torch.version, "xpu", None)}
        log.debug("xpu.detected", devices=[d.name for d in devices])
        return BackendStatus(True, details=details), devices


def render_node_problem(node: str, dev: Path = Path("/dev/dri")) -> str | None:
    """Why this process cannot open the render node, or ``None`` when it can."""
    path = dev / node
    if not path.exists():
        return f"{path} is absent (in a container, pass --device /dev/dri)"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"no permission to open {path}: add your user to the 'render' group"
    return None


@hookimpl
def hwkit_register_backends(register: Any) -> None:
    register(XPUBackend)
