"""The conformance kit over every registered plugin, on hwkit's mock CPU device.

Run it against whatever is installed with ``pytest --pyargs hwkit.testing.suite``.
Registered classes are built with ``cls.conformance_instance(device)`` when they define it
(for plugins that need a model or options), else with ``cls()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hwkit.device import Backend, Device
from hwkit.embedder import Embedder
from hwkit.retriever import Retriever
from hwkit.testing.mock import MockDevice
from hwkit.testing.suite.backend import BackendContract
from hwkit.testing.suite.device import DeviceContract
from hwkit.testing.suite.embedder import EmbedderContract
from hwkit.testing.suite.retriever import RetrieverContract
from hwkit.testing.suite.trainer import TrainerContract
from hwkit.trainer import Trainer


def build(cls: type[Any], device: MockDevice) -> Any:
    """Instantiate a registered plugin class for the kit.

    ``conformance_instance`` may return ``None`` when what the plugin needs (a model, a
    server) is not on this machine; the class is then skipped with that reason.
    """
    factory = getattr(cls, "conformance_instance", None)
    if not callable(factory):
        return cls()
    instance = factory(device)
    if instance is None:
        reason = getattr(cls, "conformance_unavailable", "what it needs is not available here")
        pytest.skip(f"{cls.__name__}: {reason}")
    return instance


@pytest.mark.hwkit_registry("backends")
class TestRegisteredBackends(BackendContract):
    @pytest.fixture
    def backend(self, hwkit_registered: type[Backend]) -> Backend:
        return hwkit_registered()


@pytest.mark.hwkit_registry("devices")
class TestRegisteredDevices(DeviceContract):
    @pytest.fixture
    def device(self, hwkit_registered: Device) -> Device:
        return hwkit_registered


@pytest.mark.hwkit_registry("embedders")
class TestRegisteredEmbedders(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self, hwkit_registered: type[Embedder], hwkit_mock_device: MockDevice) -> Embedder:
        return build(hwkit_registered, hwkit_mock_device)


@pytest.mark.hwkit_registry("retrievers")
class TestRegisteredRetrievers(RetrieverContract):
    @pytest.fixture
    def retriever_factory(
        self, hwkit_registered: type[Retriever], hwkit_mock_device: MockDevice
    ) -> Callable[[], Retriever]:
        return lambda: build(hwkit_registered, hwkit_mock_device)


@pytest.mark.hwkit_registry("trainers")
class TestRegisteredTrainers(TrainerContract):
    @pytest.fixture
    def trainer(self, hwkit_registered: type[Trainer], hwkit_mock_device: MockDevice) -> Trainer:
        return build(hwkit_registered, hwkit_mock_device)
