"""The XPU backend: the sysfs pre-check, capability rules, and detection on this machine.

The pre-check reads a sysfs tree; tests hand the backend a directory laid out as
/sys/class/drm is (render node -> PCI device folder with ``vendor`` and ``device``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from hwkit.backends.xpu import (
    SYS_DRM,
    WSL_GPU,
    XPUBackend,
    integrated_by_name,
    intel_render_nodes,
    render_node_problem,
    xpu_capabilities,
)

HAS_INTEL_GPU = bool(intel_render_nodes(SYS_DRM)) or WSL_GPU.exists()


def fake_drm(root: Path, nodes: dict[str, tuple[str, str, str]]) -> Path:
    """A /sys/class/drm look-alike: node -> (pci address, vendor, device id)."""
    drm = root / "class" / "drm"
    drm.mkdir(parents=True)
    for node, (address, vendor, device_id) in nodes.items():
        pci = root / "devices" / "pci0000:00" / address
        pci.mkdir(parents=True)
        (pci / "vendor").write_text(f"{vendor}\n")
        (pci / "device").write_text(f"{device_id}\n")
        (drm / node).mkdir()
        (drm / node / "device").symlink_to(pci)
    return drm


def test_render_nodes_keep_intel_only_and_tell_igpu_from_dgpu(tmp_path: Path) -> None:
    drm = fake_drm(
        tmp_path,
        {
            "renderD128": ("0000:00:02.0", "0x8086", "0x7d55"),  # Meteor Lake Arc iGPU
            "renderD129": ("0000:03:00.0", "0x8086", "0x56a0"),  # Arc A770 behind a bridge
            "renderD130": ("0000:01:00.0", "0x10de", "0x2684"),  # an NVIDIA card
        },
    )
    nodes = intel_render_nodes(drm)
    assert [(n.node, n.pci_address, n.pci_device_id) for n in nodes] == [
        ("renderD128", "0000:00:02.0", "0x7d55"),
        ("renderD129", "0000:03:00.0", "0x56a0"),
    ]
    assert [n.integrated for n in nodes] == [True, False]


@pytest.mark.skipif(HAS_INTEL_GPU, reason="this machine has an Intel GPU")
def test_no_intel_gpu_reason_without_torch_import() -> None:
    code = (
        "import json, sys\n"
        "from hwkit.backends.xpu import XPUBackend\n"
        "s = XPUBackend().status()\n"
        "print(json.dumps({'available': s.available, 'reason': s.reason,"
        " 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["available"] is False
    assert result["reason"].startswith(
        "no Intel GPU found (no /sys/class/drm render node with vendor 0x8086"
    )
    assert result["torch"] is False


def test_non_intel_render_nodes_give_the_no_gpu_reason(tmp_path: Path) -> None:
    drm = fake_drm(tmp_path, {"renderD128": ("0000:01:00.0", "0x1002", "0x744c")})
    status = XPUBackend(drm_root=drm, wsl_gpu=tmp_path / "no-dxg").status()
    assert not status.available
    assert status.reason == f"no Intel GPU found (no {drm} render node with vendor 0x8086)"


def test_intel_node_then_torch_decides(tmp_path: Path) -> None:
    """Past the pre-check the real torch is asked; a torch without XPU is named as the cause."""
    import torch

    drm = fake_drm(tmp_path, {"renderD128": ("0000:00:02.0", "0x8086", "0x7d55")})
    backend = XPUBackend(drm_root=drm, wsl_gpu=tmp_path / "no-dxg")
    status = backend.status()
    if torch.xpu.is_available():
        pytest.skip("this torch drives a real XPU")
    assert not status.available
    assert status.reason is not None
    assert status.reason.startswith(
        f"torch {torch.__version__} has no XPU support (torch.xpu.is_available() is False)"
    )
    if not torch.xpu._is_compiled():
        assert "download.pytorch.org/whl/xpu" in status.reason
    assert status.details["render_nodes"] == ["renderD128 0000:00:02.0 0x7d55"]
    assert backend.devices() == []


def test_wsl_skips_the_sysfs_check(tmp_path: Path) -> None:
    """Under WSL2 GPUs come through /dev/dxg with no DRM render node: torch must be asked."""
    import torch

    if torch.xpu.is_available():
        pytest.skip("this torch drives a real XPU")
    (tmp_path / "dxg").write_text("")
    status = XPUBackend(drm_root=tmp_path / "no-drm", wsl_gpu=tmp_path / "dxg").status()
    assert not status.available
    assert (status.reason or "").startswith(f"torch {torch.__version__} has no XPU support")


def test_render_node_problem(tmp_path: Path) -> None:
    assert "is absent" in (render_node_problem("renderD128", tmp_path) or "")
    (tmp_path / "renderD128").write_text("")
    assert render_node_problem("renderD128", tmp_path) is None


@pytest.mark.parametrize(
    ("gpu", "kwargs", "dtypes", "features", "shared"),
    [
        (
            "Meteor Lake Arc iGPU (no XMX, bf16 emulated)",
            {"has_fp16": True, "has_xmx": False, "integrated": True},
            ("float32", "float16", "int8"),
            (),
            True,
        ),
        (
            "Arc A770",
            {"has_fp16": True, "has_xmx": True, "integrated": False},
            ("float32", "bfloat16", "float16", "int8"),
            ("xmx",),
            False,
        ),
        (
            "Lunar Lake Arc 140V (Xe2 with XMX)",
            {"has_fp16": True, "has_xmx": True, "integrated": True},
            ("float32", "bfloat16", "float16", "int8"),
            ("xmx",),
            True,
        ),
    ],
)
def test_capabilities(
    gpu: str,
    kwargs: dict[str, bool],
    dtypes: tuple[str, ...],
    features: tuple[str, ...],
    shared: bool,
) -> None:
    caps = xpu_capabilities(**kwargs)
    assert caps.dtypes == dtypes, gpu
    assert caps.features == features, gpu
    assert caps.shared_memory is shared
    assert caps.can_train


@pytest.mark.parametrize(
    ("name", "integrated"),
    [
        ("Intel(R) Arc(TM) Graphics", True),  # Meteor Lake
        ("Intel(R) Arc(TM) 140V GPU (16GB)", True),  # Lunar Lake
        ("Intel(R) Iris(R) Xe Graphics", True),
        ("Intel(R) UHD Graphics 770", True),
        ("Intel(R) Arc(TM) A770 Graphics", False),
        ("Intel(R) Arc(TM) B580 Graphics", False),
        ("Intel(R) Arc(TM) Pro A60 Graphics", False),
        ("Intel(R) Data Center GPU Max 1550", False),
        ("Intel(R) Data Center GPU Flex 170", False),
    ],
)
def test_integrated_by_name(name: str, integrated: bool) -> None:
    assert integrated_by_name(name) is integrated


def test_meteor_lake_profile_agrees_with_detection() -> None:
    """profiles/arc-meteor-lake.toml describes what detection reports for that iGPU."""
    import hwkit.profiles
    from hwkit.hardware_profile import load_profile

    profile = load_profile(Path(hwkit.profiles.__file__).parent / "arc-meteor-lake.toml")
    caps = xpu_capabilities(has_fp16=True, has_xmx=False, integrated=True)
    assert profile.kind == "xpu"
    assert set(profile.compute.native_dtypes) == set(caps.dtypes)
    assert profile.memory.shared_with_host is caps.shared_memory is True
    assert profile.training.dtype == "float16"


def test_detection_is_cached_and_refreshable() -> None:
    backend = XPUBackend()
    first = backend.status()
    assert backend.status() is first
    backend.refresh()
    second = backend.status()
    assert second is not first
    assert second == first


def test_registered_through_the_hwkit_entry_point() -> None:
    (ep,) = [e for e in metadata.entry_points(group="hwkit") if e.name == "xpu"]
    registered: list[type] = []
    ep.load().hwkit_register_backends(registered.append)
    assert registered == [XPUBackend]
