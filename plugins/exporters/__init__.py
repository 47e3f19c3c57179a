"""Built-in exporters: merged HF weights, GGUF, Ollama Modelfile, OpenVINO IR, and the
``hwkit export`` command.

Each writes under a temporary name and renames into place only after verification passes.
The exporter modules (and their pydantic option models) are imported when the registry is
filled, not when hwkit starts; heavy libraries only inside ``export``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    import typer

    from hwkit.exporter import Exporter
    from hwkit.plugins.exporters.gguf_export import GGUFExporter
    from hwkit.plugins.exporters.merged import MergedExporter
    from hwkit.plugins.exporters.ollama import OllamaExporter
    from hwkit.plugins.exporters.openvino_export import OpenVINOExporter

__all__ = ["GGUFExporter", "MergedExporter", "OllamaExporter", "OpenVINOExporter"]

_MODULES = {
    "MergedExporter": "hwkit.plugins.exporters.merged",
    "GGUFExporter": "hwkit.plugins.exporters.gguf_export",
    "OllamaExporter": "hwkit.plugins.exporters.ollama",
    "OpenVINOExporter": "hwkit.plugins.exporters.openvino_export",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def hwkit_register_exporters(register: Register[type[Exporter]]) -> None:
    for name in _MODULES:
        register(__getattr__(name))


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.exporters.cli import register

    register(cli)
