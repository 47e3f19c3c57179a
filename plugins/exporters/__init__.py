"""Built-in exporters: merged HF weights, GGUF, Ollama Modelfile, OpenVINO IR, and the
``hwkit export`` command.

Each writes under a temporary name and renames into place only after verification passes.
Heavy libraries are imported inside ``export``, so registering costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl
from hwkit.plugins.exporters.gguf_export import GGUFExporter
from hwkit.plugins.exporters.merged import MergedExporter
from hwkit.plugins.exporters.ollama import OllamaExporter
from hwkit.plugins.exporters.openvino_export import OpenVINOExporter

if TYPE_CHECKING:
    import typer

    from hwkit.exporter import Exporter

__all__ = ["GGUFExporter", "MergedExporter", "OllamaExporter", "OpenVINOExporter"]


@hookimpl
def hwkit_register_exporters(register: Register[type[Exporter]]) -> None:
    for cls in (MergedExporter, GGUFExporter, OllamaExporter, OpenVINOExporter):
        register(cls)


@hookimpl
def hwkit_register_commands(cli: typer.Typer) -> None:
    from hwkit.plugins.exporters.cli import register

    register(cli)
