"""Choosing the active profile: HWKIT_PROFILE (name or path) > matching device > generic.

Devices are ``hwkit.testing.MockDevice`` s; profiles are the shipped TOML files, files written
to tmp_path, and profiles a plugin registers through the ``hwkit_register_profiles`` hook.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hwkit.profiles
from hwkit.errors import ConfigError, NotFoundError, UnknownNameError
from hwkit.hardware_profile import (
    ComputeSpec,
    HardwareProfile,
    MatchRules,
    MemorySpec,
    load_profile,
    profile_for,
    select_profile,
)
from hwkit.hookspecs import hookimpl
from hwkit.plugin_manager import PluginManager
from hwkit.profiles import PROFILE_DIR
from hwkit.registry import Registry
from hwkit.runtime import Runtime
from hwkit.testing import MockDevice

GOOD_TOML = """\
name = "acme-x1"
display_name = "ACME X1 Accelerator 48GB"
vendor = "ACME"
source = "ACME X1 product brief (test fixture)"

[match]
kind = "cuda"
name_patterns = ['ACME X1\\b']

[memory]
capacity_gb = 48
budget_fraction = 0.9

[compute]
native_dtypes = ["float32", "bfloat16"]

[training]
dtype = "bfloat16"
"""


def builtin_manager(*plugins: tuple[str, object]) -> PluginManager:
    """The built-in profiles plus ``plugins``, registered and collected like entry points."""
    pm = PluginManager(disabled=set())
    pm.register_plugin(hwkit.profiles, "profiles", distribution="hwkit")
    for name, plugin in plugins:
        pm.register_plugin(plugin, name, distribution=f"{name}-dist")
    return pm.collect()


@pytest.fixture(scope="module")
def profiles() -> Registry[HardwareProfile]:
    return builtin_manager().profiles


def mock(profiles: Registry[HardwareProfile], name: str, index: int = 0) -> MockDevice:
    return MockDevice(profiles.get(name), index=index)


def other_device(kind: str, name: str, capacity_gb: float = 48) -> MockDevice:
    """A mock device for hardware no shipped profile describes."""
    return MockDevice(
        HardwareProfile(
            name="unlisted",
            display_name=name,
            source="test: hardware with no profile",
            match=MatchRules(kind=kind),
            memory=MemorySpec(capacity_gb=capacity_gb),
            compute=ComputeSpec(native_dtypes=["float32", "bfloat16", "float16"], features=["fp8"]),
        )
    )


# -- matching the detected device ----------------------------------------------------------


def test_mock_h200_is_matched_by_h200(profiles: Registry[HardwareProfile]) -> None:
    device = mock(profiles, "h200")
    active = select_profile(profiles, [device], env={})
    assert (active.profile.name, active.source, active.present) == ("h200", "match", True)
    assert active.device_id == device.id == "cuda:0"
    assert device.memory().total == 141 * 10**9


def test_dedicated_gpu_beats_the_cpu(profiles: Registry[HardwareProfile]) -> None:
    devices = [mock(profiles, "cpu"), mock(profiles, "t4"), mock(profiles, "rtx5090", index=1)]
    active = select_profile(profiles, devices, env={}, host_total=64 * 10**9)
    assert active.profile.name == "rtx5090"  # larger trainable budget than the T4
    assert active.device_id == "cuda:1"


def test_cpu_only_machine_gets_the_cpu_profile(profiles: Registry[HardwareProfile]) -> None:
    active = select_profile(profiles, [mock(profiles, "cpu")], env={})
    assert (active.profile.name, active.source) == ("cpu", "match")


def test_catch_all_cpu_never_shadows_a_named_cpu_profile(tmp_path: Path) -> None:
    named = tmp_path / "xeon.toml"
    named.write_text(
        (PROFILE_DIR / "cpu.toml")
        .read_text()
        .replace('name = "cpu"', 'name = "xeon-8480"')
        .replace('display_name = "Generic x86-64 / Arm CPU"', 'display_name = "Intel Xeon 8480+"')
        .replace("name_patterns = []", "name_patterns = ['Xeon.*8480']")
    )
    xeon = load_profile(named)
    for order in (["cpu", "xeon-8480"], ["xeon-8480", "cpu"]):
        registry: Registry[HardwareProfile] = Registry("profile")
        for name in order:
            registry.add(
                name, xeon if name == "xeon-8480" else load_profile(PROFILE_DIR / "cpu.toml"), "t"
            )
        assert profile_for(MockDevice(xeon), registry).name == "xeon-8480"
        assert profile_for(other_device("cpu", "AMD EPYC 9654"), registry).name == "cpu"


def test_unmatched_device_gets_a_generic_profile(profiles: Registry[HardwareProfile]) -> None:
    device = other_device("cuda", "NVIDIA B200", capacity_gb=180)
    generic = profile_for(device, profiles)
    assert generic.generic and generic.name == "generic-cuda"
    assert generic.display_name == "NVIDIA B200"
    assert generic.memory.capacity_gb == 180
    assert generic.training.dtype == "bfloat16"
    assert "fp8" in generic.compute.features
    assert generic.matches(device)
    active = select_profile(profiles, [mock(profiles, "cpu"), device], env={})
    assert (active.profile.name, active.source, active.present) == ("generic-cuda", "generic", True)
    assert "derived from detection" in active.reason


def test_no_device_at_all_is_an_error(profiles: Registry[HardwareProfile]) -> None:
    with pytest.raises(NotFoundError, match="no device detected"):
        select_profile(profiles, [], env={})


# -- HWKIT_PROFILE -------------------------------------------------------------------------


def test_env_name_wins_and_is_labelled_not_present(profiles: Registry[HardwareProfile]) -> None:
    active = select_profile(profiles, [mock(profiles, "cpu")], env={"HWKIT_PROFILE": "h200"})
    assert (active.profile.name, active.source, active.present) == ("h200", "env", False)
    assert active.device_id is None
    assert "HWKIT_PROFILE=h200" in active.reason and "not present" in active.reason


def test_env_name_over_a_matching_device_is_present(profiles: Registry[HardwareProfile]) -> None:
    devices = [mock(profiles, "cpu"), mock(profiles, "rtx5090"), mock(profiles, "t4", index=1)]
    active = select_profile(profiles, devices, env={"HWKIT_PROFILE": "t4"})
    assert (active.profile.name, active.present, active.device_id) == ("t4", True, "cuda:1")


def test_env_path_to_a_toml_file(profiles: Registry[HardwareProfile], tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(GOOD_TOML)
    active = select_profile(profiles, [mock(profiles, "cpu")], env={"HWKIT_PROFILE": str(path)})
    assert active.profile.name == "acme-x1" and active.profile.path == str(path)
    assert active.source == "env" and not active.present
    assert "(file)" in active.reason
    acme = MockDevice(active.profile)
    assert select_profile(profiles, [acme], env={"HWKIT_PROFILE": str(path)}).present


def test_env_unknown_name_lists_known_names(profiles: Registry[HardwareProfile]) -> None:
    with pytest.raises(UnknownNameError) as info:
        select_profile(profiles, [mock(profiles, "cpu")], env={"HWKIT_PROFILE": "rtx5080"})
    assert info.value.known == profiles.names()
    message = info.value.one_line()
    assert "'rtx5080'" in message and "HWKIT_PROFILE" in message
    assert "rtx5090" in message and "intel-npu-lunar-lake" in message


def test_env_missing_file_is_not_found(profiles: Registry[HardwareProfile], tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(NotFoundError, match=r"nope\.toml"):
        select_profile(profiles, [mock(profiles, "cpu")], env={"HWKIT_PROFILE": str(missing)})


MALFORMED = [
    # (change to the good file, field the error must name)
    (("capacity_gb = 48", 'capacity_gb = "lots"'), "memory.capacity_gb"),
    (("budget_fraction = 0.9", "budget_fraction = 1.5"), "memory.budget_fraction"),
    (('source = "ACME X1 product brief (test fixture)"\n', ""), "source"),
    (('native_dtypes = ["float32", "bfloat16"]', "features = []"), "compute.native_dtypes"),
    (("name_patterns = ['ACME X1\\b']", "name_patterns = ['ACME (X1']"), "match.name_patterns"),
    (('dtype = "bfloat16"', 'dtype = "bfloat16"\nlora_rnk = 8'), "training.lora_rnk"),
]


@pytest.mark.parametrize(("change", "field"), MALFORMED, ids=[f for _, f in MALFORMED])
def test_malformed_file_names_file_and_field(
    change: tuple[str, str], field: str, profiles: Registry[HardwareProfile], tmp_path: Path
) -> None:
    old, new = change
    assert old in GOOD_TOML
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_TOML.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        select_profile(profiles, [mock(profiles, "cpu")], env={"HWKIT_PROFILE": str(path)})
    message = info.value.one_line()
    assert str(path) in message and f"'{field}'" in message
    assert "\n" not in message


def test_bad_toml_syntax_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "syntax.toml"
    path.write_text(GOOD_TOML.replace("capacity_gb = 48", "capacity_gb = = 48"))
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    line = GOOD_TOML.splitlines().index("capacity_gb = 48") + 1
    message = info.value.one_line()
    assert str(path) in message and "not valid TOML" in message and f"line {line}," in message


# -- Runtime.load(env=...) on this machine -------------------------------------------------


def test_runtime_env_profile_not_present_here() -> None:
    runtime = Runtime.load(env={"HWKIT_PROFILE": "h200"}, disabled={"*"})
    active = runtime.active_profile
    assert (active.profile.name, active.source, active.present) == ("h200", "env", False)
    assert active.profile.capacity_bytes() == 141 * 10**9
    assert "not present" in active.reason


def test_runtime_env_path_and_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(GOOD_TOML)
    assert Runtime.load(env={"HWKIT_PROFILE": str(path)}).active_profile.profile.name == "acme-x1"
    with pytest.raises(UnknownNameError, match=r"known: .*h100"):
        _ = Runtime.load(env={"HWKIT_PROFILE": "h-100"}).active_profile


def test_runtime_without_env_matches_a_detected_device() -> None:
    runtime = Runtime.load(env={}, disabled={"*"})
    devices = runtime.devices()
    active = runtime.active_profile
    assert active.present and active.source in ("match", "generic")
    assert active.device_id in [d.id for d in devices]
    if [d.kind for d in devices] == ["cpu"]:  # a CPU-only machine such as CI
        assert active.profile.name == "cpu"


# -- profiles shipped by a plugin ----------------------------------------------------------


class ProfilePlugin:
    """A third party's plugin object: registers every TOML path it was given."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths

    @hookimpl
    def hwkit_register_profiles(self, register: Any) -> None:
        for path in self.paths:
            register(path)


def test_plugin_ships_a_profile_that_matches_its_device(tmp_path: Path) -> None:
    path = tmp_path / "acme-x1.toml"
    path.write_text(GOOD_TOML)
    pm = builtin_manager(("acme", ProfilePlugin(path)))
    assert pm.failures == []
    assert "acme-x1" in pm.profiles and "h200" in pm.profiles
    assert pm.profiles.owner("acme-x1") == "acme"
    device = MockDevice(pm.profiles.get("acme-x1"))
    active = select_profile(pm.profiles, [device], env={})
    assert (active.profile.name, active.source, active.present) == ("acme-x1", "match", True)
    assert Runtime(pm, env={"HWKIT_PROFILE": "acme-x1"}).active_profile.profile.path == str(path)


def test_broken_plugin_profile_is_reported_and_others_load(tmp_path: Path) -> None:
    good, broken, clash = tmp_path / "good.toml", tmp_path / "broken.toml", tmp_path / "clash.toml"
    good.write_text(GOOD_TOML)
    broken.write_text(
        GOOD_TOML.replace('name = "acme-x1"', 'name = "acme-x2"').replace(
            "capacity_gb = 48", "capacity_gb = -1"
        )
    )
    clash.write_text(GOOD_TOML.replace('name = "acme-x1"', 'name = "h200"'))
    pm = builtin_manager(("acme", ProfilePlugin(broken, good, clash)))
    assert "acme-x1" in pm.profiles and "acme-x2" not in pm.profiles
    assert pm.profiles.owner("h200") == "profiles"  # the built-in keeps its name
    assert {p.stem for p in PROFILE_DIR.glob("*.toml")} <= set(pm.profiles.names())
    errors = [f for f in pm.failures if f.plugin == "acme"]
    assert len(errors) == 2
    assert all(
        f.stage == "hwkit_register_profiles" and f.distribution == "acme-dist" for f in errors
    )
    assert str(broken) in errors[0].error and "memory.capacity_gb" in errors[0].error
    assert "already registered" in errors[1].error and "'h200'" in errors[1].error
