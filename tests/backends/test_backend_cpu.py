"""The CPU backend: always available, memory from psutil (capped by cgroups), ISA from flags."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import psutil
import pytest

from hwkit.backends.cpu import (
    CPUBackend,
    CPUDevice,
    cgroup_memory,
    cpu_features,
    cpu_flags,
    isa_level,
)

GiB = 1024**3


def _proc_flags() -> set[str]:
    """The flags line of /proc/cpuinfo, read independently of the backend."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return set()
    for line in path.read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_available_with_one_device_and_psutil_memory() -> None:
    backend = CPUBackend()
    status = backend.status()
    assert status.available and status.reason is None
    (device,) = backend.devices()
    assert device.id == "cpu:0" and device.kind == "cpu"
    memory = device.memory()
    vm = psutil.virtual_memory()
    limit = cgroup_memory()
    assert memory.total == (vm.total if limit is None else min(vm.total, limit[0]))
    # free moves while tests run; it must be psutil's figure give or take 512 MiB
    assert abs(memory.free - vm.available) < GiB // 2 or limit is not None
    assert 0 < memory.used_by_us < memory.total
    assert abs(memory.used_by_us - psutil.Process().memory_info().rss) < 256 * 1024**2
    assert device.capabilities.shared_memory and device.capabilities.can_train


def test_isa_level_matches_proc_cpuinfo() -> None:
    flags = _proc_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags here")
    assert cpu_flags() == frozenset(flags)
    expected = (
        "amx"
        if {"amx_bf16", "amx_tile"} <= flags
        else "avx512"
        if "avx512f" in flags
        else "avx2"
        if "avx2" in flags
        else "neon"
        if "asimd" in flags
        else "baseline"
    )
    device = CPUBackend().devices()[0]
    assert device.details()["isa"] == expected
    native_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert device.capabilities.supports("bfloat16") is native_bf16


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ({"avx2", "avx512f", "amx_tile", "amx_bf16"}, "amx"),  # Sapphire Rapids
        ({"avx2", "avx512f", "avx512_bf16"}, "avx512"),  # Zen 4
        ({"avx", "avx2", "fma"}, "avx2"),
        ({"asimd", "fp"}, "neon"),  # aarch64
        ({"sse4_2"}, "baseline"),
    ],
)
def test_isa_level(flags: set[str], level: str) -> None:
    assert isa_level(frozenset(flags)) == level


def test_features() -> None:
    feats = cpu_features(frozenset({"avx2", "avx512f", "avx512_vnni", "amx_bf16"}))
    assert feats == ("amx", "avx2", "avx512", "vnni")


def test_cgroup_v2_limit_caps_memory(tmp_path: Path) -> None:
    """A container limited to 2 GiB must not be planned against the host's RAM."""
    (tmp_path / "memory.max").write_text("max\n")  # the root: unlimited
    own = tmp_path / "kubepods" / "pod1"
    own.mkdir(parents=True)
    (tmp_path / "kubepods" / "memory.max").write_text(f"{4 * GiB}\n")
    (own / "memory.max").write_text(f"{2 * GiB}\n")
    (own / "memory.current").write_text(f"{GiB // 2}\n")
    assert cgroup_memory(tmp_path, own="/kubepods/pod1") == (2 * GiB, GiB // 2)
    assert cgroup_memory(tmp_path, own="/kubepods") == (4 * GiB, 0)

    device = CPUDevice(cgroup_root=tmp_path / "kubepods" / "pod1")
    memory = device.memory()
    assert memory.total == min(psutil.virtual_memory().total, 2 * GiB)
    assert memory.free <= 2 * GiB - GiB // 2


def test_cgroup_v1_and_unlimited(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 "no limit"
    assert cgroup_memory(tmp_path, own="/") is None
    (v1 / "memory.limit_in_bytes").write_text(f"{3 * GiB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{GiB}\n")
    assert cgroup_memory(tmp_path, own="/") == (3 * GiB, GiB)
    assert cgroup_memory(tmp_path / "nothing-here", own="/") is None


def test_cached_and_torch_placement() -> None:
    import torch

    backend = CPUBackend()
    assert backend.status() is backend.status()
    device = backend.devices()[0]
    assert device.place(torch.ones(2)).device.type == "cpu"


def test_registered_through_the_hwkit_entry_point() -> None:
    (ep,) = [e for e in metadata.entry_points(group="hwkit") if e.name == "cpu"]
    registered: list[type] = []
    ep.load().hwkit_register_backends(registered.append)
    assert registered == [CPUBackend]
