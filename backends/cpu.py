"""The CPU backend: always available; psutil memory, ISA level and bf16 support from cpu flags.

Memory is psutil's, narrowed by a cgroup memory limit when the process runs under one
(a container started with ``--memory``): psutil reports the host's RAM there, and a plan
made against it would be killed by the kernel long before the host runs short.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

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
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
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


CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as a huge page-aligned number; anything above this is unlimited.
_V1_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2 unlimited) -> None


def _own_cgroup_v2(proc_cgroup: Path = Path("/proc/self/cgroup")) -> str:
    """This process's cgroup v2 path (``0::/path``); ``/`` inside most containers."""
    try:
        for line in proc_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    except OSError:
        pass
    return "/"


def cgroup_memory(root: Path = CGROUP_ROOT, own: str | None = None) -> tuple[int, int] | None:
    """``(limit, usage)`` in bytes of the tightest cgroup memory limit, or ``None`` when unlimited.

    cgroup v2: ``memory.max``/``memory.current`` in this process's cgroup (``own``, read
    from /proc/self/cgroup) and each ancestor up to ``root``, since a parent's limit binds
    too. cgroup v1: ``memory/memory.limit_in_bytes``/``memory.usage_in_bytes`` under ``root``.
    """
    best: tuple[int, int] | None = None
    rel = (_own_cgroup_v2() if own is None else own).strip("/")
    parts = [p for p in rel.split("/") if p]
    for depth in range(len(parts), -1, -1):
        folder = root.joinpath(*parts[:depth])
        limit = _read_int(folder / "memory.max")
        if limit is not None and limit > 0 and (best is None or limit < best[0]):
            best = (limit, _read_int(folder / "memory.current") or 0)
    if best is not None:
        return best
    v1 = root / "memory"
    limit = _read_int(v1 / "memory.limit_in_bytes")
    if limit is not None and 0 < limit < _V1_UNLIMITED:
        return limit, _read_int(v1 / "memory.usage_in_bytes") or 0
    return None


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cpuset), not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    import psutil

    return psutil.cpu_count(logical=True) or 1


class CPUDevice(Device):
    kind = "cpu"

    def __init__(self, cgroup_root: Path = CGROUP_ROOT) -> None:
        self.cgroup_root = cgroup_root
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
            dtypes=tuple(dtypes),
            features=cpu_features(flags),
            can_train=True,
            shared_memory=True,
            attention=("sdpa", "eager"),
            runtimes=("transformers", "openvino", "llama.cpp"),
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def memory(self) -> MemorySnapshot:
        """Host memory from psutil, capped by the cgroup limit where there is one."""
        import psutil

        vm = psutil.virtual_memory()
        total, free = int(vm.total), int(vm.available)
        rss = int(psutil.Process().memory_info().rss)
        cgroup = cgroup_memory(self.cgroup_root)
        if cgroup is not None:
            limit, usage = cgroup
            total, free = min(total, limit), min(free, max(0, limit - usage))
        return MemorySnapshot(total=total, free=free, used_by_us=rss)

    def details(self) -> dict[str, Any]:
        import psutil

        return {
            "isa": isa_level(cpu_flags()),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": psutil.cpu_count(logical=True),
            "usable_cores": usable_cores(),
            "cgroup_memory_limit": (cgroup_memory(self.cgroup_root) or (None, None))[0],
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
