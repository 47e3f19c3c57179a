"""pytest plugin (``pytest11`` entry point): fixtures and parametrisation for the kit.

A test class marked ``@pytest.mark.hwkit_registry("backends")`` (or ``devices``,
``embedders``, ``retrievers``, ``trainers``) that asks for the ``hwkit_registered``
fixture runs once per registered plugin of that kind, built-in or installed.
"""

from __future__ import annotations

from typing import Any

import pytest

from hwkit.plugin_manager import PluginManager
from hwkit.testing.mock import MockDevice


def _plugins() -> PluginManager:
    """The process's plugin manager (loaded once, shared with the code under test)."""
    from hwkit.runtime import current

    return current().plugins


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hwkit")
    group.addoption(
        "--hwkit-profile",
        default="cpu",
        help="hardware profile the mock device reports in the conformance kit (default: cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "hwkit_registry(kind): run the class once per registered plugin of that kind"
    )


def _registered(kind: str) -> list[tuple[str, Any]]:
    pm = _plugins()
    if kind == "devices":
        found: list[tuple[str, Any]] = []
        for _, cls in pm.backends.items():
            backend = cls()
            if backend.status().available:
                found.extend((d.id, d) for d in backend.devices())
        return found
    return list(getattr(pm, kind).items())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hwkit_registered" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("hwkit_registry")
    if marker is None:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: hwkit_registered needs "
            "@pytest.mark.hwkit_registry(kind)"
        )
    items = _registered(marker.args[0])
    metafunc.parametrize(
        "hwkit_registered",
        [item for _, item in items],
        ids=[name for name, _ in items],
        scope="class",
    )


@pytest.fixture(scope="session")
def hwkit_plugins() -> PluginManager:
    """The plugin manager with every installed plugin loaded."""
    return _plugins()


@pytest.fixture(scope="session")
def hwkit_mock_device(request: pytest.FixtureRequest) -> MockDevice:
    """A mock device reporting the ``--hwkit-profile`` profile (default: cpu)."""
    name = request.config.getoption("--hwkit-profile")
    return MockDevice(_plugins().profiles.get(name))


@pytest.fixture
def mock_device_for() -> Any:
    """Factory: ``mock_device_for("h200")`` gives a fresh MockDevice for that profile."""

    def make(name: str, **kwargs: Any) -> MockDevice:
        return MockDevice(_plugins().profiles.get(name), **kwargs)

    return make
