"""The conformance kit: one abstract test class per contract.

An implementation subclasses a contract class in its own test module and supplies the
fixtures the class names (``backend``, ``device``, ``embedder``, ``exporter`` and
``export_case``, ``inference_runtime``, ``retriever_factory``, ``trainer``); pytest then
runs every contract test against it. ``pytest --pyargs hwkit.testing.suite`` runs the kit
over every registered plugin, built-in or installed, on hwkit's mock CPU device.
"""

from hwkit.testing.suite.backend import BackendContract
from hwkit.testing.suite.device import DeviceContract
from hwkit.testing.suite.embedder import EmbedderContract
from hwkit.testing.suite.exporter import ExportCase, ExporterContract
from hwkit.testing.suite.retriever import RetrieverContract
from hwkit.testing.suite.runtime import InferenceRuntimeContract
from hwkit.testing.suite.trainer import TrainerContract

__all__ = [
    "BackendContract",
    "DeviceContract",
    "EmbedderContract",
    "ExportCase",
    "ExporterContract",
    "InferenceRuntimeContract",
    "RetrieverContract",
    "TrainerContract",
]
