"""The CUDA backend: NVIDIA GPUs found through NVML, used through torch.cuda.

Detection asks NVML first (the driver's management library, as Accelerate's NVML-based
check does): it needs no CUDA context and no torch import, so a machine without an NVIDIA
driver is settled in milliseconds. torch is imported only when NVML did find GPUs, to
check that this torch build has CUDA at all. Memory and telemetry come from NVML; the
memory this process holds comes from torch only once torch.cuda is initialised.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwkit.device import Backend, BackendStatus, Capabilities, Device, MemorySnapshot, Telemetry
from hwkit.hookspecs import hookimpl
from hwkit.log import get_logger

log = get_logger(__name__)

NVML_LIBRARY = "nvml.dll" if sys.platform.startswith("win") else "libnvidia-ml.so.1"
TORCH_CUDA_HINT = (
    "install a CUDA build of torch, e.g. "
    "pip install torch --index-url https://download.pytorch.org/whl/cu128"
)


# -- pure functions (unit-tested without hardware) --------------------------------------------


def cuda_capabilities(major: int, minor: int) -> Capabilities:
    """What a GPU of compute capability ``major.minor`` runs natively.

    fp16 arithmetic is full rate from Volta (7.0) and on the P100 (6.0); consumer Pascal
    (6.1) runs it at 1/64 rate, so it is not native there. Tensor cores come with 7.0,
    bf16/tf32 and FlashAttention-2 with Ampere (8.0), fp8 with Ada/Hopper (8.9), fp4 with
    Blackwell (10.0, 12.0). A T4 (7.5) therefore trains in fp16, not bf16.
    """
    cc = (major, minor)
    dtypes = ["float32"]
    if cc >= (8, 0):
        dtypes.append("bfloat16")
    if cc >= (7, 0) or cc in ((5, 3), (6, 0), (6, 2)):
        dtypes.append("float16")
    if cc >= (8, 9):
        dtypes.append("float8")
    if cc >= (6, 1):
        dtypes.append("int8")  # dp4a from Pascal, int8 tensor cores from Turing
    features = []
    if cc >= (7, 0):
        features.append("tensor_cores")
    if cc >= (8, 0):
        features += ["flash_attention", "tf32"]
    if cc >= (8, 9):
        features.append("fp8")
    if cc >= (10, 0):
        features.append("fp4")
    attention = ["sdpa", "eager"]
    if cc >= (8, 0):
        attention.append("flash_attention_2")  # with the flash-attn package installed
    return Capabilities(
        dtypes=tuple(dtypes),
        features=tuple(features),
        can_train=True,
        shared_memory=False,
        compute_capability=f"{major}.{minor}",
        quantization=("nf4", "int8"),  # bitsandbytes' CUDA kernels
        attention=tuple(attention),
        runtimes=("transformers", "llama.cpp"),
    )


def _arch_number(arch: str) -> tuple[str, int, bool] | None:
    """``sm_90a`` -> ("sm", 90, True); ``compute_80`` -> ("compute", 80, False)."""
    m = re.fullmatch(r"(sm|compute)_(\d+)([af]?)", arch.strip())
    if not m:
        return None
    return m.group(1), int(m.group(2)), m.group(3) == "a"


def arch_supported(major: int, minor: int, arch_list: Sequence[str]) -> bool:
    """Whether a torch built for ``arch_list`` has kernels for compute capability ``major.minor``.

    A cubin ``sm_XY`` runs on the same major version with minor >= Y (``sm_90a`` only on
    9.0 itself); PTX ``compute_XY`` can be JIT-compiled for any device >= X.Y.
    """
    device = major * 10 + minor
    for arch in arch_list:
        parsed = _arch_number(arch)
        if parsed is None:
            continue
        kind, code, specific = parsed
        if kind == "sm":
            if specific and code == device:
                return True
            if not specific and code // 10 == major and code % 10 <= minor:
                return True
        elif code <= device:
            return True
    return False


def arch_warning(name: str, major: int, minor: int, arch_list: Sequence[str]) -> str | None:
    """A warning when torch lacks kernels for this GPU (an RTX 5090, sm_120, needs CUDA 12.8+)."""
    if not arch_list or arch_supported(major, minor, arch_list):
        return None
    return (
        f"{name} is sm_{major}{minor} but this torch has kernels only for {' '.join(arch_list)}: "
        f"kernels will fail with 'no kernel image is available'; {TORCH_CUDA_HINT}"
        + (" (sm_120 needs a CUDA 12.8 or newer build)" if major >= 12 else "")
    )


def cuda_version_string(version: int) -> str:
    """NVML's 12080 -> "12.8"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def driver_too_old(torch_cuda: str | None, driver_cuda: str | None) -> str | None:
    """A warning when torch was built for a newer CUDA than the driver supports."""
    if not torch_cuda or not driver_cuda:
        return None
    try:
        built = tuple(int(p) for p in torch_cuda.split(".")[:2])
        drv = tuple(int(p) for p in driver_cuda.split(".")[:2])
    except ValueError:
        return None
    if built[0] > drv[0]:  # minor-version compatibility covers a newer minor, not a major
        return (
            f"torch is built for CUDA {torch_cuda} but the driver supports CUDA {driver_cuda} at "
            "most: update the NVIDIA driver or install a torch built for an older CUDA"
        )
    return None


def visible_indices(spec: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices that CUDA exposes, in CUDA's order, per ``CUDA_VISIBLE_DEVICES``.

    NVML ignores ``CUDA_VISIBLE_DEVICES``; CUDA reads it left to right and stops at the
    first entry it cannot resolve (an index out of range, an unknown or ambiguous UUID
    prefix, a duplicate, or a MIG instance, which this mapping does not resolve).
    """
    if spec is None:
        return list(range(len(uuids)))
    found: list[int] = []
    for raw in spec.split(","):
        token = raw.strip()
        if not token:
            break
        if re.fullmatch(r"-?\d+", token):
            index = int(token)
            if index < 0 or index >= len(uuids) or index in found:
                break
            found.append(index)
            continue
        if token.startswith("MIG-"):
            break
        prefix = token if token.startswith("GPU-") else f"GPU-{token}"
        matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(prefix)]
        if len(matches) != 1 or matches[0] in found:
            break
        found.append(matches[0])
    return found


def torch_cuda_problem(torch_version: str, torch_cuda: str | None, hip: str | None) -> str | None:
    """Why this torch cannot drive NVIDIA GPUs that NVML found, or ``None`` when it can."""
    if hip:
        return f"torch {torch_version} is a ROCm (HIP {hip}) build and cannot drive NVIDIA GPUs"
    if not torch_cuda:
        return f"torch {torch_version} is built without CUDA"
    return None


# -- NVML access ---------------------------------------------------------------------------------


def _nvml_init_reason(exc: Exception) -> str:
    """A reason a user can act on, for an NVML initialisation failure."""
    import pynvml

    text = str(exc)
    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return (
            f"NVIDIA driver not found: NVML could not load {NVML_LIBRARY} (install the NVIDIA "
            "driver; in a container, run with --gpus all)"
        )
    if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
        return (
            f"NVIDIA driver installed but not loaded ({text}): load the kernel module "
            "(sudo modprobe nvidia) or reboot after installing the driver"
        )
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return f"no permission to query the NVIDIA driver ({text}): check access to /dev/nvidia*"
    return f"NVML failed to initialise ({text}): run nvidia-smi to see what the driver reports"


def _nvml_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class _GPU:
    """What NVML says about one GPU at detection time."""

    nvml_index: int
    name: str
    uuid: str
    pci_bus_id: str
    major: int
    minor: int


def _nvml_gpus() -> tuple[list[_GPU], list[str]]:
    """Every GPU NVML can describe, and one line per GPU it cannot (lost, in reset)."""
    import pynvml

    gpus, broken = [], []
    for i in range(pynvml.nvmlDeviceGetCount()):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                _GPU(
                    nvml_index=i,
                    name=_nvml_str(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_nvml_str(pynvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=_nvml_str(pynvml.nvmlDeviceGetPciInfo(handle).busId),
                    major=int(major),
                    minor=int(minor),
                )
            )
        except pynvml.NVMLError as exc:
            broken.append(f"NVML GPU {i}: {exc}")
    return gpus, broken


def _nvml_or_none(fn: Any, *args: Any) -> Any:
    """Call an NVML query; ``None`` where the GPU does not support it."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


# -- device and backend --------------------------------------------------------------------------


class CUDADevice(Device):
    """One NVIDIA GPU. ``index`` is torch's ordinal (after ``CUDA_VISIBLE_DEVICES``)."""

    kind = "cuda"

    def __init__(self, index: int, gpu: _GPU, versions: dict[str, Any]) -> None:
        import pynvml

        self.index = index
        self.name = gpu.name
        self._gpu = gpu
        self._versions = versions
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.nvml_index)
        self._caps = cuda_capabilities(gpu.major, gpu.minor)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory(self) -> MemorySnapshot:
        import pynvml

        info = pynvml.nvmlDeviceGetMemoryInfo(self._handle)
        return MemorySnapshot(total=int(info.total), free=int(info.free), used_by_us=self._ours())

    def _ours(self) -> int:
        """Bytes torch's caching allocator holds here; 0 while torch.cuda is uninitialised."""
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return 0
        return int(torch.cuda.memory_reserved(self.index))

    def telemetry(self) -> Telemetry:
        import pynvml

        util = _nvml_or_none(pynvml.nvmlDeviceGetUtilizationRates, self._handle)
        temp = _nvml_or_none(
            pynvml.nvmlDeviceGetTemperature, self._handle, pynvml.NVML_TEMPERATURE_GPU
        )
        power_mw = _nvml_or_none(pynvml.nvmlDeviceGetPowerUsage, self._handle)
        return Telemetry(
            utilization_pct=None if util is None else float(util.gpu),
            temperature_c=None if temp is None else float(temp),
            power_w=None if power_mw is None else power_mw / 1000.0,
        )

    def details(self) -> dict[str, Any]:
        import torch

        gpu = self._gpu
        arch_list = torch.cuda.get_arch_list()  # compile-time flags: no CUDA initialisation
        warnings = [
            w
            for w in (
                arch_warning(gpu.name, gpu.major, gpu.minor, arch_list),
                driver_too_old(self._versions.get("torch_cuda"), self._versions.get("driver_cuda")),
            )
            if w
        ]
        return {
            "compute_capability": f"{gpu.major}.{gpu.minor}",
            "sm": f"sm_{gpu.major}{gpu.minor}",
            "uuid": gpu.uuid,
            "pci_bus_id": gpu.pci_bus_id,
            "nvml_index": gpu.nvml_index,
            **self._versions,
            "torch_arch_list": arch_list,
            "warnings": warnings,
        }

    def torch_device(self) -> Any:
        import torch

        return torch.device("cuda", self.index)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.index)

    def empty_cache(self) -> None:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return  # nothing cached, and no reason to create a context
        with torch.cuda.device(self.index):
            torch.cuda.empty_cache()


class CUDABackend(Backend):
    """NVIDIA GPUs: NVML to find them (no CUDA context), torch.cuda to use them."""

    name = "cuda"
    kind = "cuda"

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        try:
            import pynvml
        except ImportError:
            return BackendStatus(
                False, "nvidia-ml-py is not installed: pip install nvidia-ml-py"
            ), []
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            return BackendStatus(False, _nvml_init_reason(exc)), []

        driver = _nvml_str(pynvml.nvmlSystemGetDriverVersion())
        raw_cuda = _nvml_or_none(pynvml.nvmlSystemGetCudaDriverVersion)
        driver_cuda = None if raw_cuda is None else cuda_version_string(int(raw_cuda))
        gpus, broken = _nvml_gpus()
        found: dict[str, Any] = {
            "driver": driver,
            "driver_cuda": driver_cuda,
            "gpus": [g.name for g in gpus],
        }
        if broken:
            found["unreadable"] = broken
        if not gpus:
            why = f": {'; '.join(broken)} (run nvidia-smi)" if broken else ""
            return BackendStatus(
                False, f"NVIDIA driver {driver} is loaded but NVML lists no usable GPU{why}", found
            ), []

        visible_env = os.environ.get("CUDA_VISIBLE_DEVICES")
        visible = visible_indices(visible_env, [g.uuid for g in gpus])
        if not visible:
            return BackendStatus(
                False,
                f"CUDA_VISIBLE_DEVICES={visible_env!r} hides all {len(gpus)} GPU(s) NVML found: "
                "unset it or list the indices or UUIDs to use",
                found,
            ), []

        try:
            import torch
        except ImportError:
            return BackendStatus(False, f"torch is not installed: {TORCH_CUDA_HINT}", found), []
        problem = torch_cuda_problem(
            torch.__version__, torch.version.cuda, getattr(torch.version, "hip", None)
        )
        if problem:
            names = ", ".join(gpus[i].name for i in visible)
            return BackendStatus(
                False, f"{problem}; NVML found {names}: {TORCH_CUDA_HINT}", found
            ), []

        versions = {"driver": driver, "driver_cuda": driver_cuda, "torch_cuda": torch.version.cuda}
        devices: list[Device] = [
            CUDADevice(ordinal, gpus[nvml_index], versions)
            for ordinal, nvml_index in enumerate(visible)
        ]
        details: dict[str, Any] = {**versions, "device_count": len(devices)}
        if broken:
            details["unreadable"] = broken
        models = {gpus[i].name for i in visible}
        if len(models) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
            details["warning"] = (
                "mixed GPU models: CUDA orders them fastest first, NVML by PCI bus; set "
                "CUDA_DEVICE_ORDER=PCI_BUS_ID so cuda:N names the GPU hwkit reports"
            )
        log.debug("cuda.detected", devices=[d.name for d in devices], driver=driver)
        return BackendStatus(True, details=details), devices


@hookimpl
def hwkit_register_backends(register: Any) -> None:
    register(CUDABackend)
