"""The shipped hardware profiles: they validate, hold the true figures, and match real names.

The figures are checked one by one against the vendors' datasheets so a regression to the
seed's errors (an RTX 5090 with 24 GB, a 49.4 TOPS Meteor Lake NPU, XMX on Meteor Lake's
Arc iGPU) fails here. Device names are the strings NVML, torch.xpu and OpenVINO report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwkit.hardware_profile import (
    ComputeSpec,
    HardwareProfile,
    MatchRules,
    MemorySpec,
    load_profile,
    profile_for,
)
from hwkit.profiles import PROFILE_DIR
from hwkit.registry import Registry
from hwkit.testing import MockDevice

SHIPPED = sorted(PROFILE_DIR.glob("*.toml"))
REQUIRED = {
    "h200",
    "h100",
    "a100",
    "a100-40gb",
    "rtx5090",
    "rtx4090",
    "t4",
    "arc-meteor-lake",
    "intel-npu-meteor-lake",
    "intel-npu-lunar-lake",
    "cpu",
}


@pytest.fixture(scope="module")
def shipped() -> Registry[HardwareProfile]:
    registry: Registry[HardwareProfile] = Registry("profile")
    for path in SHIPPED:
        profile = load_profile(path)
        registry.add(profile.name, profile, "test")
    return registry


def reported(kind: str, name: str, capacity_gb: float | None = 16) -> MockDevice:
    """A mock device that reports ``name`` as a real driver would (NVML, torch.xpu, OpenVINO)."""
    profile = HardwareProfile(
        name="reported",
        display_name=name,
        source="test: the device name a driver reports",
        match=MatchRules(kind=kind),
        memory=MemorySpec(capacity_gb=capacity_gb, shared_with_host=capacity_gb is None),
        compute=ComputeSpec(native_dtypes=["float32", "float16"]),
    )
    return MockDevice(profile, host_total=32 * 10**9)


# -- every shipped file --------------------------------------------------------------------


def test_required_profiles_are_shipped() -> None:
    assert {p.stem for p in SHIPPED} >= REQUIRED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_profile_validates_and_cites_sources(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.path == str(path)
    assert not profile.generic
    assert len(profile.source) > 40, "the source line must name the datasheet or spec page"
    for figure in profile.throughput:
        assert figure.source.strip(), f"{profile.name}: {figure.metric} has no source"
    if profile.memory.capacity_gb is None:
        assert profile.memory.shared_with_host, "a profile needs capacity_gb or host memory"
    if profile.compute.can_train:
        assert profile.training.dtype in profile.compute.native_dtypes


def test_every_shipped_profile_is_in_the_docs_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "profiles.md").read_text()
    for path in SHIPPED:
        assert f"| `{path.stem}` |" in doc, f"docs/profiles.md has no row for {path.stem}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_mock_device_of_a_profile_is_matched_by_it(
    path: Path, shipped: Registry[HardwareProfile]
) -> None:
    profile = shipped.get(path.stem)
    assert profile_for(MockDevice(profile), shipped).name == profile.name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_budget_fraction_fits_the_kind_of_memory(path: Path) -> None:
    profile = load_profile(path)
    fraction = profile.memory.budget_fraction
    if profile.kind == "cpu":
        assert fraction == 0.7
    elif profile.memory.shared_with_host:
        assert fraction == 0.5
    else:
        assert 0.9 <= fraction <= 0.92


# -- the true figures ----------------------------------------------------------------------

# name: (capacity GB, bandwidth GB/s, compute capability, training dtype)
DEDICATED = {
    "h200": (141, 4800, "9.0", "bfloat16"),
    "h100": (80, 3350, "9.0", "bfloat16"),
    "a100": (80, 2039, "8.0", "bfloat16"),
    "a100-40gb": (40, 1555, "8.0", "bfloat16"),
    "rtx5090": (32, 1792, "12.0", "bfloat16"),
    "rtx4090": (24, 1008, "8.9", "bfloat16"),
    "t4": (16, 320, "7.5", "float16"),
    "l4": (24, 300, "8.9", "bfloat16"),
}


@pytest.mark.parametrize("name", sorted(DEDICATED))
def test_dedicated_gpu_figures(name: str, shipped: Registry[HardwareProfile]) -> None:
    capacity, bandwidth, cc, dtype = DEDICATED[name]
    profile = shipped.get(name)
    assert profile.kind == "cuda"
    assert profile.memory.capacity_gb == capacity
    assert not profile.memory.shared_with_host
    assert profile.memory.bandwidth_gbps == bandwidth
    assert profile.compute.compute_capability == cc
    assert profile.training.dtype == dtype


@pytest.mark.parametrize("name", sorted(DEDICATED))
def test_cuda_profiles_speak_the_cuda_backends_vocabulary(
    name: str, shipped: Registry[HardwareProfile]
) -> None:
    """A profile and the detected device must agree on dtypes and features for its CC."""
    from hwkit.backends.cuda import cuda_capabilities

    profile = shipped.get(name)
    major, minor = (int(x) for x in (profile.compute.compute_capability or "").split("."))
    caps = cuda_capabilities(major, minor)
    assert set(profile.compute.native_dtypes) == set(caps.dtypes)
    assert set(profile.compute.features) <= set(caps.features)


def test_intel_profiles_speak_the_xpu_and_npu_backends_vocabulary(
    shipped: Registry[HardwareProfile],
) -> None:
    from hwkit.backends.npu import NPU_CAPABILITIES
    from hwkit.backends.xpu import xpu_capabilities

    arc = shipped.get("arc-meteor-lake")
    caps = xpu_capabilities(has_fp16=True, has_xmx=False, integrated=True)
    assert set(arc.compute.native_dtypes) == set(caps.dtypes)
    assert set(arc.compute.features) <= set(caps.features)
    assert arc.memory.shared_with_host == caps.shared_memory
    for name in ("intel-npu-meteor-lake", "intel-npu-lunar-lake"):
        npu = shipped.get(name)
        assert set(npu.compute.native_dtypes) == set(NPU_CAPABILITIES.dtypes)
        assert npu.compute.can_train == NPU_CAPABILITIES.can_train


def _peak(profile: HardwareProfile, metric: str) -> float:
    return next(t.value for t in profile.throughput if t.metric == metric)


def test_hopper_bf16_is_989_dense(shipped: Registry[HardwareProfile]) -> None:
    for name in ("h200", "h100"):
        assert _peak(shipped.get(name), "bf16_dense_tflops") == 989
        assert "fp8" in shipped.get(name).compute.features


def test_rtx5090_is_32gb_and_needs_cuda_12_8(shipped: Registry[HardwareProfile]) -> None:
    profile = shipped.get("rtx5090")
    assert profile.memory.capacity_gb == 32  # the seed said 24
    assert profile.capacity_bytes() == 32 * 10**9
    assert "bfloat16" in profile.compute.native_dtypes
    assert "sm_120" in profile.notes and "12.8" in profile.notes


def test_t4_has_no_bf16_and_trains_in_fp16(shipped: Registry[HardwareProfile]) -> None:
    profile = shipped.get("t4")
    assert "bfloat16" not in profile.compute.native_dtypes
    assert "flash_attention" not in profile.compute.features
    assert profile.training.dtype == "float16"
    assert profile.training.quantization == "none"  # 4-bit for 7B is the allocator's call
    assert _peak(profile, "fp16_dense_tflops") == 65


def test_a100_variants_differ_in_memory_only(shipped: Registry[HardwareProfile]) -> None:
    big, small = shipped.get("a100"), shipped.get("a100-40gb")
    assert (big.memory.capacity_gb, small.memory.capacity_gb) == (80, 40)
    assert big.compute == small.compute
    assert _peak(big, "bf16_dense_tflops") == _peak(small, "bf16_dense_tflops") == 312


def test_meteor_lake_arc_has_no_xmx_and_emulates_bf16(shipped: Registry[HardwareProfile]) -> None:
    profile = shipped.get("arc-meteor-lake")
    assert profile.kind == "xpu"
    assert profile.memory.shared_with_host and profile.memory.capacity_gb is None
    assert profile.memory.budget_fraction == 0.5
    assert "xmx" not in profile.compute.features
    assert "bfloat16" in profile.compute.emulated_dtypes
    assert "bfloat16" not in profile.compute.native_dtypes
    assert "float16" in profile.compute.native_dtypes
    assert profile.training.dtype == "float16"
    host = 32 * 10**9
    assert profile.budget_bytes(host) == host // 2


def test_npus_are_inference_only_with_true_tops(shipped: Registry[HardwareProfile]) -> None:
    meteor, lunar = shipped.get("intel-npu-meteor-lake"), shipped.get("intel-npu-lunar-lake")
    for npu in (meteor, lunar):
        assert npu.kind == "npu"
        assert not npu.compute.can_train
        assert set(npu.compute.native_dtypes) == {"float16", "int8"}
        assert npu.memory.shared_with_host
        assert "HWKIT_PROFILE" in npu.notes
    assert _peak(meteor, "int8_tops") == 11  # the seed said 49.4
    assert _peak(lunar, "int8_tops") == 48


def test_no_profile_for_the_neural_compute_stick(shipped: Registry[HardwareProfile]) -> None:
    assert not any("ncs" in n or "myriad" in n for n in shipped.names())
    for name in ("Intel Movidius MYRIAD X VPU", "Intel(R) Neural Compute Stick 2"):
        for kind in ("npu", "myriad"):
            assert profile_for(reported(kind, name, None), shipped).generic


# -- matching the strings real drivers report ----------------------------------------------

REAL_NAMES = [
    ("cuda", "NVIDIA H200", "h200"),
    ("cuda", "NVIDIA H200 NVL", None),  # 600 W part, other figures
    ("cuda", "NVIDIA GH200 480GB", None),
    ("cuda", "NVIDIA H100 80GB HBM3", "h100"),
    ("cuda", "NVIDIA H100 PCIe", None),
    ("cuda", "NVIDIA H100 NVL", None),
    ("cuda", "NVIDIA A100-SXM4-80GB", "a100"),
    ("cuda", "NVIDIA A100 80GB PCIe", "a100"),
    ("cuda", "NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("cuda", "NVIDIA A100-PCIE-40GB", "a100-40gb"),
    ("cuda", "NVIDIA GeForce RTX 5090", "rtx5090"),
    ("cuda", "NVIDIA GeForce RTX 5090 Laptop GPU", None),
    ("cuda", "NVIDIA GeForce RTX 4090", "rtx4090"),
    ("cuda", "NVIDIA GeForce RTX 4090 Laptop GPU", None),
    ("cuda", "Tesla T4", "t4"),
    ("cuda", "NVIDIA T400 4GB", None),
    ("cuda", "NVIDIA L4", "l4"),
    ("cuda", "NVIDIA L40S", None),
    ("xpu", "Intel(R) Arc(TM) Graphics", "arc-meteor-lake"),
    ("xpu", "Intel(R) Arc(TM) A770 Graphics", None),
    ("xpu", "Intel(R) Arc(TM) 140V GPU (16GB)", None),
    ("npu", "Intel(R) AI Boost", "intel-npu-meteor-lake"),
    ("npu", "Intel(R) AI Boost (NPU 3720)", "intel-npu-meteor-lake"),  # hwkit's npu backend
    ("npu", "Intel(R) AI Boost (NPU 4000)", "intel-npu-lunar-lake"),
    ("npu", "Intel(R) AI Boost (NPU NPU4000)", "intel-npu-lunar-lake"),
    ("npu", "Intel(R) AI Boost (NPU 5010)", None),  # a later NPU: no figures yet
    ("cpu", "Intel(R) Xeon(R) Platinum 8480+", "cpu"),
    ("cpu", "AMD EPYC 9654 96-Core Processor", "cpu"),
    ("xpu", "NVIDIA H200", None),  # the kind must match too
]


@pytest.mark.parametrize(
    ("kind", "name", "expected"), REAL_NAMES, ids=[n for _, n, _ in REAL_NAMES]
)
def test_real_device_names(
    kind: str, name: str, expected: str | None, shipped: Registry[HardwareProfile]
) -> None:
    capacity = None if kind in ("cpu", "npu") else 16
    chosen = profile_for(reported(kind, name, capacity), shipped)
    if expected is None:
        assert chosen.generic, f"{name!r} should get a profile derived from detection"
        assert chosen.name == f"generic-{kind}"
    else:
        assert chosen.name == expected


# -- hwkit profiles list|show --------------------------------------------------------------


@pytest.fixture(scope="module")
def cli() -> CliRunner:
    return CliRunner()


def _invoke(cli: CliRunner, *args: str, env: dict[str, str] | None = None) -> str:
    from hwkit.cli import app

    result = cli.invoke(app, list(args), env={"COLUMNS": "200", "HWKIT_PROFILE": "", **(env or {})})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_list_json_marks_presence_and_active(cli: CliRunner) -> None:
    data = json.loads(_invoke(cli, "profiles", "list", "--json", env={"HWKIT_PROFILE": "h200"}))
    rows = {row["name"]: row for row in data["profiles"]}
    assert set(rows) >= REQUIRED
    assert data["active"] == "h200"
    assert rows["h200"]["active"] and not rows["h200"]["present"]
    assert rows["h200"]["memory_gb"] == 141
    assert rows["cpu"]["present"] and rows["cpu"]["devices"] == ["cpu:0"]
    assert rows["t4"]["training_dtype"] == "float16"
    assert rows["intel-npu-meteor-lake"]["can_train"] is False


def test_cli_list_survives_a_bad_hwkit_profile(cli: CliRunner) -> None:
    data = json.loads(_invoke(cli, "profiles", "list", "--json", env={"HWKIT_PROFILE": "h2000"}))
    assert data["active"] is None
    assert "unknown hardware profile (HWKIT_PROFILE) 'h2000'" in data["active_error"]
    assert "h200" in {row["name"] for row in data["profiles"]}


def test_cli_list_table(cli: CliRunner) -> None:
    out = _invoke(cli, "profiles", "list")
    for text in ("rtx5090", "NVIDIA GeForce RTX 5090 32GB", "32 GB", "float16 (inference only)"):
        assert text in out
    cpu_line = next(line for line in out.splitlines() if "│ cpu" in line)
    assert "yes (cpu:0)" in cpu_line


def test_cli_show_json_has_every_field_and_source(cli: CliRunner) -> None:
    data = json.loads(_invoke(cli, "profiles", "show", "h200", "--json"))
    assert data["memory"]["capacity_gb"] == 141
    assert data["compute"]["compute_capability"] == "9.0"
    assert data["present"] is False and data["plugin"] == "profiles"
    assert all(t["source"] for t in data["throughput"])
    assert "datasheet" in data["source"]


def test_cli_show_table_says_not_present(cli: CliRunner) -> None:
    out = _invoke(cli, "profiles", "show", "intel-npu-meteor-lake")
    assert "not present here" in out
    assert "int8_tops" in out and "compute.can_train" in out


def test_cli_show_validates_a_file(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text((PROFILE_DIR / "cpu.toml").read_text().replace('name = "cpu"', 'name = "mine"'))
    data = json.loads(_invoke(cli, "profiles", "show", str(path), "--json"))
    assert data["name"] == "mine" and data["path"] == str(path)
    assert data["devices"] == ["cpu:0"] and data["plugin"] is None


def test_cli_show_unknown_name_is_one_line_exit_4() -> None:
    env = {**os.environ, "HWKIT_PROFILE": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "hwkit", "profiles", "show", "h2000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unknown hardware profile 'h2000'" in lines[0]
    assert "h200" in lines[0] and "rtx5090" in lines[0] and "Traceback" not in proc.stderr
