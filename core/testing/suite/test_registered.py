"""The conformance kit over every registered plugin, on hwkit's mock CPU device.

Run it against whatever is installed with ``pytest --pyargs hwkit.testing.suite``.
Registered classes are built with ``cls.conformance_instance(device)`` when they define it
(for plugins that need a model or options), else with ``cls()``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hwkit.device import Backend, Device
from hwkit.embedder import Embedder
from hwkit.exporter import Exporter
from hwkit.inference import InferenceRuntime
from hwkit.retriever import Retriever
from hwkit.testing.mock import MockDevice
from hwkit.testing.suite.backend import BackendContract
from hwkit.testing.suite.device import DeviceContract
from hwkit.testing.suite.embedder import EmbedderContract
from hwkit.testing.suite.exporter import (
    KIT_MIN_AGREEMENT,
    ExportCase,
    ExporterContract,
    kit_lora_run,
    kit_model,
)
from hwkit.testing.suite.retriever import RetrieverContract
from hwkit.testing.suite.runtime import InferenceRuntimeContract
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


def export_case(cls: type[Exporter], workdir: Path) -> ExportCase:
    """The kit's export for a registered exporter, from what its class declares:

    * ``conformance_requires``: modules it needs here (skipped, naming them, when absent);
    * ``conformance_source``: ``"model"`` (the kit's small Llama, the default) or
      ``"lora-run"`` (a LoRA run over it);
    * ``conformance_options``: options for a cheap verified export.

    Where the exporter takes ``min_agreement`` and the class does not set it, the kit's
    gate for its random model (:data:`KIT_MIN_AGREEMENT`) is passed.
    """
    from hwkit.extras import install_hint, is_available

    missing = [m for m in getattr(cls, "conformance_requires", ()) if not is_available(m)]
    if missing:
        hints = "; ".join(install_hint(m) for m in missing)
        pytest.skip(f"{cls.__name__} needs {', '.join(missing)}, not installed here ({hints})")
    model = kit_model(workdir / "kit-model")
    kind = getattr(cls, "conformance_source", "model")
    source = kit_lora_run(model, workdir / "kit-lora-run") if kind == "lora-run" else model
    options = dict(getattr(cls, "conformance_options", {}))
    if "min_agreement" in cls.options_model.model_fields:
        options.setdefault("min_agreement", KIT_MIN_AGREEMENT)
    return ExportCase(source, options)


@pytest.mark.hwkit_registry("exporters")
class TestRegisteredExporters(ExporterContract):
    @pytest.fixture(scope="class")
    def exporter(self, hwkit_registered: type[Exporter], hwkit_mock_device: MockDevice) -> Exporter:
        return build(hwkit_registered, hwkit_mock_device)

    @pytest.fixture(scope="class")
    def export_case(
        self, hwkit_registered: type[Exporter], tmp_path_factory: pytest.TempPathFactory
    ) -> ExportCase:
        return export_case(hwkit_registered, _kit_dir(tmp_path_factory))


@pytest.mark.hwkit_registry("runtimes")
class TestRegisteredRuntimes(InferenceRuntimeContract):
    @pytest.fixture(scope="class")
    def inference_runtime(
        self, hwkit_registered: type[InferenceRuntime], hwkit_mock_device: MockDevice
    ) -> InferenceRuntime:
        return build(hwkit_registered, hwkit_mock_device)


def _kit_dir(factory: pytest.TempPathFactory) -> Path:
    """One folder per test session for the kit's models (built once, shared by classes)."""
    folder = factory.getbasetemp() / "hwkit-kit"
    folder.mkdir(exist_ok=True)
    return folder
