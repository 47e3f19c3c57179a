"""Deploy targets arrive through ``hwkit_register_deploy_targets``: the built-in Ollama
target, and a third party's target from its own distribution's entry point."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import hwkit.plugins.deploy
from hwkit.deploy import Deployment, DeployTarget
from hwkit.errors import ConfigError
from hwkit.hookspecs import hookimpl
from hwkit.plugin_manager import PluginManager
from hwkit.plugins.deploy.ollama import OllamaTarget
from tests.fake_dist import make_distribution

THIRD_PARTY = '''
from hwkit.deploy import Deployment, DeployTarget
from hwkit.hookspecs import hookimpl


class CloudTarget(DeployTarget):
    """Serves from a (pretend) cloud endpoint."""

    name = "cloud"
    description = "an OpenAI-compatible cloud endpoint"

    def deploy(self, name, version, artifacts):
        return Deployment(self.name, name, version, self.options["url"] + "/v1", name, {})

    def rollback(self, name, previous):
        return previous


@hookimpl
def hwkit_register_deploy_targets(register):
    register(CloudTarget)
'''


def test_the_builtin_entry_point_registers_the_ollama_target() -> None:
    [ep] = [ep for ep in metadata.entry_points(group="hwkit") if ep.name == "deploy"]
    assert ep.value == "hwkit.plugins.deploy"
    pm = PluginManager(disabled={"*"})
    pm.register_plugin(hwkit.plugins.deploy, "deploy", distribution="hwkit")
    pm.collect()
    assert pm.deploy_targets.get("ollama") is OllamaTarget
    assert pm.deploy_targets.owner("ollama") == "deploy"
    assert not pm.failures


def test_a_third_party_target_registers_from_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_distribution(
        tmp_path / "site", "hwkit-cloud", {"hwkit_cloud": THIRD_PARTY}, {"cloud": "hwkit_cloud"}
    )
    monkeypatch.syspath_prepend(str(root))
    pm = PluginManager(disabled={"hwkit"}).load_entry_points().collect()  # built-ins off
    target_cls = pm.deploy_targets.get("cloud")
    assert pm.deploy_targets.owner("cloud") == "cloud" and not pm.failures
    deployment = target_cls(url="https://llm.example").deploy("bot", 3, {})
    assert deployment.endpoint == "https://llm.example/v1" and deployment.version == 3


def test_a_class_outside_the_contract_is_refused() -> None:
    class Wrong:
        @hookimpl
        def hwkit_register_deploy_targets(self, register: Any) -> None:
            register(type("NotATarget", (), {"name": "nope"}))

    pm = PluginManager(disabled={"*"})
    pm.register_plugin(Wrong(), "wrong")
    pm.collect()
    assert "nope" not in pm.deploy_targets
    [failure] = pm.failures
    assert failure.stage == "hwkit_register_deploy_targets"
    assert "subclass of hwkit.deploy.DeployTarget" in failure.error


def test_deployment_round_trips_and_refuses_malformed_records() -> None:
    d = Deployment("ollama", "bot", 2, "http://127.0.0.1:11434/v1", "bot:latest", {"prev": None})
    assert Deployment.from_dict(d.to_dict()) == d
    with pytest.raises(ConfigError, match="'version' must be an integer"):
        Deployment.from_dict({**d.to_dict(), "version": "2"})
    with pytest.raises(ConfigError, match="'model' must be a string"):
        Deployment.from_dict({**d.to_dict(), "model": None})


def test_the_contract_needs_deploy_and_rollback() -> None:
    class Half(DeployTarget):
        name = "half"

        def deploy(self, name: str, version: int, artifacts: Any) -> Deployment:
            raise NotImplementedError

    with pytest.raises(TypeError, match="rollback"):
        Half()  # type: ignore[abstract]
