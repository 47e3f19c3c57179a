"""The CUDA backend: capability rules, CUDA_VISIBLE_DEVICES mapping, and detection here.

Detection runs for real against this machine's NVML; the tests that need a driver, or its
absence, skip on the other kind of machine.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import hwkit.profiles
from hwkit.backends import cuda
from hwkit.backends.cuda import (
    CUDABackend,
    arch_supported,
    arch_warning,
    cuda_capabilities,
    cuda_version_string,
    driver_too_old,
    torch_cuda_problem,
    visible_indices,
)
from hwkit.hardware_profile import HardwareProfile, load_profile


def _nvml_loads() -> bool:
    try:
        ctypes.CDLL(cuda.NVML_LIBRARY)
    except OSError:
        return False
    return True


HAS_DRIVER = _nvml_loads()

# Release wheels' arch lists (torch.cuda.get_arch_list() of the cu126 and cu128 x86 builds).
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
CU128 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize(
    ("gpu", "cc", "has", "lacks"),
    [
        ("T4", (7, 5), {"float16", "int8", "tensor_cores"}, {"bfloat16", "flash_attention", "fp8"}),
        ("A100", (8, 0), {"bfloat16", "float16", "flash_attention", "tf32"}, {"fp8", "float8"}),
        ("RTX 4090", (8, 9), {"bfloat16", "float8", "fp8", "flash_attention"}, {"fp4"}),
        ("H100/H200", (9, 0), {"bfloat16", "float8", "fp8", "tensor_cores"}, {"fp4"}),
        ("RTX 5090", (12, 0), {"bfloat16", "float8", "fp8", "fp4", "flash_attention"}, set()),
        ("GTX 1080", (6, 1), {"int8"}, {"float16", "bfloat16", "tensor_cores"}),
        ("V100", (7, 0), {"float16", "tensor_cores"}, {"bfloat16", "tf32"}),
    ],
)
def test_capabilities_follow_compute_capability(
    gpu: str, cc: tuple[int, int], has: set[str], lacks: set[str]
) -> None:
    caps = cuda_capabilities(*cc)
    offered = set(caps.dtypes) | set(caps.features)
    assert has <= offered, f"{gpu} should offer {has - offered}"
    assert not (lacks & offered), f"{gpu} should not offer {lacks & offered}"
    assert caps.compute_capability == f"{cc[0]}.{cc[1]}"
    assert caps.can_train and not caps.shared_memory
    assert caps.dtypes[0] == "float32"


def _profiles(kind: str) -> list[HardwareProfile]:
    folder = Path(hwkit.profiles.__file__).parent
    found = [load_profile(path) for path in sorted(folder.glob("*.toml"))]
    return [p for p in found if p.kind == kind]


CUDA_PROFILES = _profiles("cuda")


def test_there_are_cuda_profiles_to_check() -> None:
    assert {"t4", "a100", "h100", "h200", "rtx4090", "rtx5090"} <= {p.name for p in CUDA_PROFILES}


@pytest.mark.parametrize("profile", CUDA_PROFILES, ids=lambda p: p.name)
def test_detection_agrees_with_the_shipped_profile(profile: HardwareProfile) -> None:
    """A detected GPU must report what its profile says, in the same vocabulary."""
    cc = profile.compute.compute_capability
    assert cc, f"{profile.name} has no compute_capability"
    major, minor = (int(part) for part in cc.split("."))
    caps = cuda_capabilities(major, minor)
    assert set(caps.dtypes) == set(profile.compute.native_dtypes)
    assert set(profile.compute.features) <= set(caps.features)


@pytest.mark.parametrize(
    ("cc", "arch_list", "ok"),
    [
        ((12, 0), CU126, False),  # RTX 5090 on a CUDA 12.6 build: no sm_120 kernels
        ((12, 0), CU128, True),
        ((9, 0), CU126, True),
        ((8, 6), ["sm_80"], True),  # sm_80 cubins run on 8.6
        ((8, 0), ["sm_86"], False),  # but not the other way round
        ((10, 0), ["sm_90a"], False),  # arch-specific cubins run only on 9.0
        ((9, 0), ["sm_90a"], True),
        ((12, 0), ["sm_80", "compute_90"], True),  # PTX is JIT-compiled for newer GPUs
        ((8, 0), ["compute_90"], False),
    ],
)
def test_arch_support(cc: tuple[int, int], arch_list: list[str], ok: bool) -> None:
    assert arch_supported(*cc, arch_list) is ok


def test_rtx5090_warning_names_sm_and_fix() -> None:
    text = arch_warning("NVIDIA GeForce RTX 5090", 12, 0, CU126)
    assert text is not None
    assert "sm_120" in text and "CUDA 12.8" in text and "sm_90" in text
    assert arch_warning("NVIDIA GeForce RTX 5090", 12, 0, CU128) is None
    assert arch_warning("Tesla T4", 7, 5, []) is None  # CPU torch: nothing to compare


def test_driver_versions() -> None:
    assert cuda_version_string(12080) == "12.8"
    assert cuda_version_string(13000) == "13.0"
    assert driver_too_old("13.0", "12.8") is not None
    assert driver_too_old("12.8", "12.4") is None  # minor-version compatibility
    assert driver_too_old(None, "12.8") is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [0, 1, 2]),
        ("2,0", [2, 0]),
        ("", []),
        ("-1", []),
        ("0,7,1", [0]),  # CUDA stops at the first index it cannot resolve
        ("1,1", [1]),
        ("GPU-bbbb", [1]),
        ("cccc1234,0", [2, 0]),  # a UUID prefix without "GPU-"
        ("GPU-", []),  # ambiguous prefix
        ("MIG-1234", []),
    ],
)
def test_visible_indices(spec: str | None, expected: list[int]) -> None:
    uuids = ["GPU-aaaa0000", "GPU-bbbb0000", "GPU-cccc1234"]
    assert visible_indices(spec, uuids) == expected


def test_this_torch_build_is_judged() -> None:
    problem = torch_cuda_problem(torch.__version__, torch.version.cuda, torch.version.hip)
    if torch.version.cuda:
        assert problem is None
    else:
        assert problem == f"torch {torch.__version__} is built without CUDA"
    assert "ROCm" in (torch_cuda_problem("2.5.0+rocm6.2", None, "6.2") or "")


@pytest.mark.skipif(HAS_DRIVER, reason="an NVIDIA driver is installed here")
def test_no_driver_reason_without_torch_import() -> None:
    """NVML settles it: the reason names the library, and torch is never imported."""
    code = (
        "import json, sys\n"
        "from hwkit.backends.cuda import CUDABackend\n"
        "s = CUDABackend().status()\n"
        "print(json.dumps({'available': s.available, 'reason': s.reason,"
        " 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["available"] is False
    assert result["reason"].startswith(
        f"NVIDIA driver not found: NVML could not load {cuda.NVML_LIBRARY}"
    )
    assert "install the NVIDIA driver" in result["reason"]
    assert result["torch"] is False


def test_detection_is_cached_and_refreshable() -> None:
    backend = CUDABackend()
    first = backend.status()
    assert backend.status() is first
    assert [id(d) for d in backend.devices()] == [id(d) for d in backend.devices()]
    backend.refresh()
    second = backend.status()
    assert second is not first
    assert second == first


@pytest.mark.skipif(not HAS_DRIVER, reason="needs an NVIDIA driver")
def test_real_gpus_report_memory_and_identity() -> None:
    backend = CUDABackend()
    status = backend.status()
    if not torch.version.cuda:
        assert not status.available and "built without CUDA" in (status.reason or "")
        return
    assert status.available, status.reason
    for device in backend.devices():
        info = device.info()
        assert info.memory.total > info.memory.free >= 0
        assert info.capabilities.compute_capability == info.details["compute_capability"]
        assert info.details["driver"] and info.id.startswith("cuda:")


def test_registered_through_the_hwkit_entry_point() -> None:
    (ep,) = [e for e in metadata.entry_points(group="hwkit") if e.name == "cuda"]
    registered: list[type] = []
    ep.load().hwkit_register_backends(registered.append)
    assert registered == [CUDABackend]
