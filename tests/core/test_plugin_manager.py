"""Plugin loading: each entry point on its own, failures reported, the rest keep working."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hwkit.device import Backend, BackendStatus
from hwkit.embedder import Embedder
from hwkit.errors import UnknownNameError
from hwkit.exporter import Exporter
from hwkit.hookspecs import hookimpl
from hwkit.inference import InferenceRuntime
from hwkit.plugin_manager import PluginManager, disabled_from_env, load_plugins
from hwkit.retriever import Retriever
from hwkit.trainer import Trainer
from tests.cli import run_hwkit
from tests.fake_dist import make_distribution

BROKEN_IMPORT = "raise ImportError('this plugin needs libfoo, which is not installed')\n"
DUPLICATE_CPU = """
from hwkit.hookspecs import hookimpl
from hwkit.backends.cpu import CPUBackend

@hookimpl
def hwkit_register_backends(register):
    register(CPUBackend)  # 'cpu' is taken by hwkit itself
"""
RAISES_IN_HOOK = """
from hwkit.hookspecs import hookimpl

@hookimpl
def hwkit_register_backends(register):
    raise RuntimeError('vendor SDK not initialised')
"""
GOOD = """
from hwkit.hookspecs import hookimpl
from hwkit.device import Backend, BackendStatus

class GoodBackend(Backend):
    name = 'good'
    kind = 'good'
    def _detect(self):
        return BackendStatus(False, 'no good hardware here'), []

@hookimpl
def hwkit_register_backends(register):
    register(GoodBackend)
"""
BAD_PROFILE_PLUGIN = """
from pathlib import Path
from hwkit.hookspecs import hookimpl

@hookimpl
def hwkit_register_profiles(register):
    here = Path(__file__).parent
    register(here / 'bad_profile.toml')
    register(here / 'good_profile.toml')
"""


@pytest.fixture
def third_party(tmp_path: Path) -> Path:
    root = make_distribution(
        tmp_path / "site",
        "vendor-plugins",
        {
            "broken_mod": BROKEN_IMPORT,
            "dup_mod": DUPLICATE_CPU,
            "raiser_mod": RAISES_IN_HOOK,
            "good_mod": GOOD,
            "profiles_mod": BAD_PROFILE_PLUGIN,
        },
        {
            "broken": "broken_mod",
            "dupcpu": "dup_mod",
            "raiser": "raiser_mod",
            "good": "good_mod",
            "vendorprofiles": "profiles_mod",
        },
    )
    (root / "bad_profile.toml").write_text('name = "bad"\ndisplay_name = 3\n', encoding="utf-8")
    good = (Path(__file__).parents[2] / "profiles" / "h200.toml").read_text(encoding="utf-8")
    (root / "good_profile.toml").write_text(
        good.replace('name = "h200"', 'name = "vendor-h200"'), encoding="utf-8"
    )
    return root


def test_broken_plugins_are_reported_and_the_rest_work(third_party: Path) -> None:
    result = run_hwkit("plugins", "--json", pythonpath=third_party, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    errors = "\n".join(data["errors"])
    assert "plugin 'broken' (from vendor-plugins) failed at import" in errors
    assert "libfoo" in errors
    assert "backend 'cpu' is already registered by plugin 'cpu'" in errors
    assert "vendor SDK not initialised" in errors
    assert "bad_profile.toml: field 'display_name'" in errors
    names = {p["name"]: p["registered"] for p in data["plugins"]}
    assert "backend:good" in names["good"]
    assert "backend:cpu" in names["cpu"]
    assert "profile:vendor-h200" in names["vendorprofiles"]


def test_doctor_shows_plugin_errors_and_keeps_working(third_party: Path) -> None:
    result = run_hwkit("doctor", "--json", pythonpath=third_party, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    backends = {b["name"]: b for b in data["backends"]}
    assert backends["cpu"]["available"]
    assert backends["good"]["reason"] == "no good hardware here"
    assert {e["plugin"] for e in data["plugin_errors"]} >= {"broken", "dupcpu", "raiser"}


def test_disable_env_blocks_plugins(third_party: Path) -> None:
    result = run_hwkit(
        "plugins",
        "--json",
        pythonpath=third_party,
        timeout=60,
        HWKIT_DISABLE_PLUGINS="broken, good",
    )
    data = json.loads(result.stdout)
    assert set(data["disabled"]) == {"broken", "good"}
    assert not any("libfoo" in e for e in data["errors"])
    assert "good" not in {p["name"] for p in data["plugins"]}


def test_disable_star_keeps_only_builtins(third_party: Path) -> None:
    result = run_hwkit(
        "plugins", "--json", pythonpath=third_party, timeout=60, HWKIT_DISABLE_PLUGINS="*"
    )
    data = json.loads(result.stdout)
    assert data["errors"] == []
    assert all(p["distribution"] == "hwkit" for p in data["plugins"])
    assert "cpu" in {p["name"] for p in data["plugins"]}


def test_disabled_from_env_parsing() -> None:
    assert disabled_from_env("a, b c") == {"a", "b", "c"}
    assert disabled_from_env("") == set()


class _LocalBackend(Backend):
    name = "local"
    kind = "local"

    def _detect(self) -> tuple[BackendStatus, list]:
        return BackendStatus(False, "none"), []


class _LocalPlugin:
    @hookimpl
    def hwkit_register_backends(self, register: object) -> None:
        register(_LocalBackend)  # type: ignore[operator]


def test_programmatic_registration_and_lookup_error_lists_names() -> None:
    pm = PluginManager(disabled=set()).load_entry_points()
    pm.register_plugin(_LocalPlugin(), "local-plugin")
    pm.collect()
    assert pm.backends.get("local") is _LocalBackend
    assert pm.backends.owner("local") == "local-plugin"
    with pytest.raises(UnknownNameError) as info:
        pm.backends.get("tpu")
    message = str(info.value)
    assert "unknown backend 'tpu'" in message and "cpu" in message and "local" in message


def test_builtins_come_through_entry_points() -> None:
    pm = load_plugins(disabled=set())
    builtin = {p.name for p in pm.plugins if p.builtin}
    assert {"cpu", "profiles"} <= builtin
    assert pm.backends.owner("cpu") == "cpu"


class _Everything:
    """A plugin implementing every hook, to prove each hook reaches its registry."""

    @hookimpl
    def hwkit_register_backends(self, register: Any) -> None:
        register(_LocalBackend)

    @hookimpl
    def hwkit_register_profiles(self, register: Any) -> None:
        register(Path(__file__).parents[2] / "profiles" / "cpu.toml", name="cpu-copy")

    @hookimpl
    def hwkit_register_trainers(self, register: Any) -> None:
        register(_named(Trainer, "t"))

    @hookimpl
    def hwkit_register_embedders(self, register: Any) -> None:
        register(_named(Embedder, "e"))

    @hookimpl
    def hwkit_register_retrievers(self, register: Any) -> None:
        register(_named(Retriever, "r"))

    @hookimpl
    def hwkit_register_exporters(self, register: Any) -> None:
        register(_named(Exporter, "x"))

    @hookimpl
    def hwkit_register_runtimes(self, register: Any) -> None:
        register(_named(InferenceRuntime, "g"))


def _named(contract: type, name: str) -> type:
    """A subclass of ``contract`` called ``name`` (registration checks the base class)."""
    return type(f"Fake{contract.__name__}", (contract,), {"name": name})


def test_every_hook_reaches_its_registry() -> None:
    pm = PluginManager(disabled={"*"})
    pm.register_plugin(_Everything(), "everything")
    pm.collect()
    assert pm.backends.get("local") is _LocalBackend
    assert pm.profiles.get("cpu-copy").match.kind == "cpu"
    for registry, name in (
        (pm.trainers, "t"),
        (pm.embedders, "e"),
        (pm.retrievers, "r"),
        (pm.exporters, "x"),
        (pm.runtimes, "g"),
    ):
        assert registry.get(name).name == name
        assert registry.owner(name) == "everything"


def test_a_class_outside_the_contract_is_refused_and_reported() -> None:
    class Wrong:
        @hookimpl
        def hwkit_register_trainers(self, register: Any) -> None:
            register(type("NotATrainer", (), {"name": "nope"}))

    pm = PluginManager(disabled={"*"})
    pm.register_plugin(Wrong(), "wrong")
    pm.collect()
    assert "nope" not in pm.trainers
    [failure] = pm.failures
    assert failure.plugin == "wrong" and failure.stage == "hwkit_register_trainers"
    assert "subclass of hwkit.trainer.Trainer" in failure.error and "NotATrainer" in failure.error


def test_nameless_registration_is_a_reported_failure() -> None:
    class NoName:
        @hookimpl
        def hwkit_register_exporters(self, register: Any) -> None:
            register(object())

    pm = PluginManager(disabled={"*"})
    pm.register_plugin(NoName(), "noname")
    pm.collect()
    assert len(pm.exporters) == 0
    assert any(f.plugin == "noname" and "name" in f.error for f in pm.failures)
