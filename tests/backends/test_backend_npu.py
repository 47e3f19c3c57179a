"""The NPU backend: the /dev/accel pre-check, OpenVINO's verdict, and the inference-only device.

The pre-check reads directories; tests hand the backend folders laid out as /dev/accel and
/sys/class/accel are. Past the pre-check the real OpenVINO on this machine decides.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import psutil
import pytest

from hwkit.backends.npu import (
    DEV_ACCEL,
    NPU_CAPABILITIES,
    NPUBackend,
    NPUDevice,
    accel_nodes,
    npu_display_name,
)

HAS_ACCEL = bool(accel_nodes(DEV_ACCEL))


def fake_accel(root: Path, vendors: dict[str, str]) -> tuple[Path, Path]:
    """``/dev/accel`` and ``/sys/class/accel`` look-alikes: node name -> PCI vendor."""
    dev, sys_accel = root / "dev" / "accel", root / "sys" / "class" / "accel"
    dev.mkdir(parents=True)
    sys_accel.mkdir(parents=True)
    for node, vendor in vendors.items():
        (dev / node).write_text("")
        (sys_accel / node / "device").mkdir(parents=True)
        (sys_accel / node / "device" / "vendor").write_text(f"{vendor}\n")
    return dev, sys_accel


@pytest.mark.skipif(HAS_ACCEL, reason="this machine has /dev/accel nodes")
def test_no_driver_reason_without_openvino_import() -> None:
    code = (
        "import json, sys\n"
        "from hwkit.backends.npu import NPUBackend\n"
        "s = NPUBackend().status()\n"
        "print(json.dumps({'available': s.available, 'reason': s.reason,"
        " 'openvino': 'openvino' in sys.modules, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["available"] is False
    assert result["reason"].startswith("no NPU driver: /dev/accel is absent")
    assert "intel_vpu" in result["reason"]
    assert result["openvino"] is False and result["torch"] is False


def test_empty_accel_folder(tmp_path: Path) -> None:
    dev, sys_accel = fake_accel(tmp_path, {})
    status = NPUBackend(dev_accel=dev, sys_accel=sys_accel).status()
    assert not status.available
    assert status.reason is not None
    assert status.reason.startswith(f"no NPU driver: {dev} has no accel* node")


def test_other_vendors_accelerator_is_not_an_intel_npu(tmp_path: Path) -> None:
    dev, sys_accel = fake_accel(tmp_path, {"accel0": "0x1022"})  # AMD XDNA uses /dev/accel too
    status = NPUBackend(dev_accel=dev, sys_accel=sys_accel).status()
    assert not status.available
    assert status.reason == (
        f"no Intel NPU: {dev} holds only other vendors' devices: accel0 (vendor 0x1022)"
    )


def test_intel_node_then_openvino_decides(tmp_path: Path) -> None:
    """With an accel node present, the real OpenVINO is asked and its device list quoted."""
    import openvino as ov

    listed = [str(d) for d in ov.Core().available_devices]
    if any(d.startswith("NPU") for d in listed):
        pytest.skip("OpenVINO sees a real NPU here")
    dev, sys_accel = fake_accel(tmp_path, {"accel0": "0x8086"})
    status = NPUBackend(dev_accel=dev, sys_accel=sys_accel).status()
    version = ov.__version__.split("-")[0]
    assert not status.available
    assert status.reason is not None
    assert status.reason.startswith(f"no NPU: OpenVINO {version} lists only {', '.join(listed)}")
    assert f"although {dev / 'accel0'} exists" in status.reason
    assert status.details["openvino_devices"] == listed


def test_npu_device_is_inference_only_and_has_no_torch_device() -> None:
    """An NPU whose plugin reports no memory figures budgets from host memory."""
    import torch

    device = NPUDevice(
        0, "NPU", core=None, props={"FULL_DEVICE_NAME": "Intel(R) AI Boost", "NPU_PLATFORM": "3720"}
    )
    assert device.id == "npu:0"
    assert device.name == "Intel(R) AI Boost (NPU 3720)"
    caps = device.capabilities
    assert caps == NPU_CAPABILITIES
    assert caps.can_train is False and caps.dtypes == ("float16", "int8") and caps.shared_memory
    assert device.torch_device() is None
    with pytest.raises(TypeError, match="OpenVINO-compiled models only"):
        device.place(torch.nn.Linear(2, 2))
    assert isinstance(device.autocast("float16"), contextlib.nullcontext)
    memory = device.memory()
    assert memory.total == psutil.virtual_memory().total
    assert 0 < memory.free <= memory.total and memory.used_by_us == 0
    details = device.details()
    assert details["generation"] == "NPU 3 (Meteor Lake, Arrow Lake)"
    assert details["inference_only"] is True
    json.dumps(details)


@pytest.mark.parametrize(
    ("profile_name", "platform"),
    [("intel-npu-meteor-lake", "3720"), ("intel-npu-lunar-lake", "4000")],
)
def test_npu_profiles_match_the_detected_device(profile_name: str, platform: str) -> None:
    """The name detection builds selects the right profile, whose figures agree with it."""
    import hwkit.profiles
    from hwkit.hardware_profile import load_profile

    folder = Path(hwkit.profiles.__file__).parent
    profiles = {p.name: p for p in map(load_profile, sorted(folder.glob("intel-npu-*.toml")))}
    device = NPUDevice(
        0,
        "NPU",
        core=None,
        props={"FULL_DEVICE_NAME": "Intel(R) AI Boost", "NPU_PLATFORM": platform},
    )
    assert [name for name, p in profiles.items() if p.matches(device)] == [profile_name]
    profile = profiles[profile_name]
    assert set(profile.compute.native_dtypes) == set(device.capabilities.dtypes)
    assert profile.compute.can_train is False and profile.memory.shared_with_host


def test_display_name() -> None:
    assert npu_display_name("Intel(R) AI Boost", "4000") == "Intel(R) AI Boost (NPU 4000)"
    assert npu_display_name("Intel(R) AI Boost", None) == "Intel(R) AI Boost"


def test_detection_is_cached_and_refreshable() -> None:
    backend = NPUBackend()
    first = backend.status()
    assert backend.status() is first
    backend.refresh()
    second = backend.status()
    assert second is not first
    assert second == first


def test_registered_through_the_hwkit_entry_point() -> None:
    (ep,) = [e for e in metadata.entry_points(group="hwkit") if e.name == "npu"]
    registered: list[type] = []
    ep.load().hwkit_register_backends(registered.append)
    assert registered == [NPUBackend]
