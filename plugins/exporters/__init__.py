"""Built-in exporters: merged HF weights, GGUF, Ollama Modelfile, OpenVINO IR.

Each writes under a temporary name and renames into place only after verification passes.
Heavy libraries are imported inside ``export``, so registering costs nothing.
"""

from __future__ import annotations

from hwkit.hookspecs import Register, hookimpl
from hwkit.plugins.exporters.gguf_export import GGUFExporter
from hwkit.plugins.exporters.merged import MergedExporter
from hwkit.plugins.exporters.ollama import OllamaExporter
from hwkit.plugins.exporters.openvino_export import OpenVINOExporter

__all__ = ["GGUFExporter", "MergedExporter", "OllamaExporter", "OpenVINOExporter"]


@hookimpl
def hwkit_register_exporters(register: Register) -> None:
    for cls in (MergedExporter, GGUFExporter, OllamaExporter, OpenVINOExporter):
        register(cls)
