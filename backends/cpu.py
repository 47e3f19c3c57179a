"""The CPU backend: always available; psutil memory, ISA level and bf16 support from cpuinfo flags."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path
from typing import Any

import psutil

from hwkit.device import Backend, BackendStatus, Capabilities, Device, MemorySnapshot
from hwkit.hookspecs import hookimpl


@cache
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@cache
def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def isa_level(flags: frozenset[str]) -> str:
    """The highest x86 vector ISA torch can use here (AMX > AVX-512 > AVX2 > baseline)."""
    if {"amx_bf16", "amx_tile"} <= flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "asimd" in flags:
        return "neon"
    return "baseline"


def cpu_features(flags: frozenset[str]) -> tuple[str, ...]:
    names = {
        "avx2": "avx2",
        "avx512f": "avx512",
        "avx512_bf16": "avx512_bf16",
        "amx_bf16": "amx",
        "avx512_vnni": "vnni",
        "avx_vnni": "vnni",
    }
    return tuple(sorted({feature for flag, feature in names.items() if flag in flags}))


class CPUDevice(Device):
    kind = "cpu"

    def __init__(self) -> None:
        self.index = 0
        self.name = cpu_model_name()
        flags = cpu_flags()
        # bf16 runs everywhere in torch on CPU, but is native (fast) only with AVX512-BF16 or AMX.
        dtypes = ["float32", "int8"]
        if {"avx512_bf16", "amx_bf16"} & flags:
            dtypes.insert(1, "bfloat16")
        if "amx_fp16" in flags or "avx512_fp16" in flags:
            dtypes.insert(1, "float16")
        self._caps = Capabilities(
            dtypes=tuple(dtypes), features=cpu_features(flags), can_train=True, shared_memory=True
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory(self) -> MemorySnapshot:
        vm = psutil.virtual_memory()
        rss = psutil.Process().memory_info().rss
        return MemorySnapshot(total=int(vm.total), free=int(vm.available), used_by_us=int(rss))

    def details(self) -> dict[str, Any]:
        return {
            "isa": isa_level(cpu_flags()),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "machine": platform.machine(),
        }

    def torch_device(self) -> Any:
        import torch

        return torch.device("cpu")

    @property
    def id(self) -> str:
        return "cpu:0"


class CPUBackend(Backend):
    name = "cpu"
    kind = "cpu"

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        return BackendStatus(True, details={"isa": isa_level(cpu_flags())}), [CPUDevice()]


@hookimpl
def hwkit_register_backends(register: Any) -> None:
    register(CPUBackend)
