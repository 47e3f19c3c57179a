"""``hwkit export merged|gguf|ollama|openvino SOURCE``: deployable artefacts from a run.

SOURCE is a training run directory (LoRA adapter + base named in config.toml), a Hugging
Face model directory, or a known model name. Every artefact is verified before it gets its
final name; the figures go to ``<out>/export.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

KINDS = ("merged", "gguf", "ollama", "openvino")


def _default_out(source: str) -> Path:
    """``SOURCE/export`` for a directory, ``./NAME-export`` for a model name."""
    path = Path(source)
    return path / "export" if path.is_dir() else Path.cwd() / f"{path.name or 'model'}-export"


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        kind: str = typer.Argument(..., help="merged | gguf | ollama | openvino"),
        source: str = typer.Argument(..., help="run directory, HF model directory or model name"),
        out: Path | None = typer.Option(None, "--out", "-o", help="output directory"),
        quant: str | None = typer.Option(
            None, "--quant", "-q", help="gguf/ollama: f16|q8_0|q4_k_m; openvino: fp16|int8"
        ),
        system: str | None = typer.Option(None, "--system", help="ollama: SYSTEM persona"),
        template_family: str | None = typer.Option(
            None,
            "--template-family",
            help="ollama: chatml|llama3|llama3.1|mistral (default: detect)",
        ),
        temperature: float = typer.Option(0.7, "--temperature", help="ollama PARAMETER"),
        num_ctx: int | None = typer.Option(None, "--num-ctx", help="ollama PARAMETER"),
        device: str = typer.Option("CPU", "--device", help="openvino: device to verify on"),
        min_agreement: float | None = typer.Option(
            None, "--min-agreement", help="top-1 agreement required (default per format)"
        ),
        no_verify: bool = typer.Option(
            False, "--no-verify", help="gguf f16/q8_0: skip the llama.cpp check"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    ) -> None:
        """Export a model or a LoRA run as merged weights, GGUF, Ollama or OpenVINO IR."""
        from hwkit.errors import UsageError
        from hwkit.plugin_manager import load_plugins

        if kind not in KINDS:
            raise UsageError(
                f"unknown export kind {kind!r}", hint=f"choose from {', '.join(KINDS)}"
            )
        exporter = load_plugins().exporters.get(kind)()
        out_dir = out or _default_out(source)
        options: dict[str, Any] = {
            "quant": quant,
            "verify": not no_verify,
            "min_agreement": min_agreement,
        }
        if kind == "ollama":
            options.update(
                system=system,
                template_family=template_family,
                temperature=temperature,
                num_ctx=num_ctx,
            )
        if kind == "openvino":
            options.update(device=device, precision=quant)
        target = out_dir / "merged" if kind == "merged" else out_dir
        result = exporter.export(Path(source), target, **options)
        report_path = (result if result.is_dir() else result.parent) / "export.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        figures = report.get(result.name, report)
        if as_json:
            typer.echo(json.dumps({"path": str(result), "figures": figures}, indent=2, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"hwkit export {kind}: {result}")
        table.add_column("figure", style="bold")
        table.add_column("value")
        for key, value in figures.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            table.add_row(key, str(value))
        Console().print(table)
