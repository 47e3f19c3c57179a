"""``hwkit export KIND SOURCE``: a deployable artefact from a run, by any registered exporter.

KIND is an exporter in the registry (``hwkit.runtime.current().plugins.exporters``): the
built-ins (merged, gguf, ollama, openvino) or a third party's. SOURCE is a training run
directory (LoRA adapter + base named in config.toml), a Hugging Face model directory, or a
known model name. The exporter gets only the options the user gave, checked against its
``options_model``; a flag it does not take is refused in one line. ``--option KEY=VALUE``
passes an exporter's own options. Every artefact is verified before it gets its final name;
the figures go to ``export.json`` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from hwkit.exporter import Exporter

# option name -> the flag that gives it (for one-line refusals that name the flag)
FLAGS = {
    "quant": "--quant",
    "system": "--system",
    "template_family": "--template-family",
    "temperature": "--temperature",
    "num_ctx": "--num-ctx",
    "device": "--device",
    "min_agreement": "--min-agreement",
    "verify": "--no-verify",
    "kv_cache": "--kv-cache",
}


def _kinds() -> list[str]:
    from hwkit.runtime import current

    return current().plugins.exporters.names()


class ExportCommand(TyperCommand):
    """Lists the registered exporters in ``--help``, read when help is shown (the registry
    is filled on first use, not at every start)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        kinds = ", ".join(_kinds()) or "none"
        for param in self.params:
            if param.name == "kind":
                param.help = f"a registered exporter: {kinds}"  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def _default_out(source: str) -> Path:
    """``SOURCE/export`` for a directory, ``./NAME-export`` for a model name."""
    path = Path(source)
    return path / "export" if path.is_dir() else Path.cwd() / f"{path.name or 'model'}-export"


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``--option KEY=VALUE`` (repeatable) to a mapping; the exporter's model converts."""
    from hwkit.errors import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--option {pair!r}: expected KEY=VALUE")
        if key in out:
            raise UsageError(f"--option {key}: given twice")
        out[key] = value
    return out


def export_options(
    exporter: type[Exporter], kind: str, flags: dict[str, Any], pairs: list[str]
) -> dict[str, Any]:
    """The options the user gave (flags not left at None, and ``--option`` pairs), checked
    against the exporter's ``options_model``; only those are passed on."""
    from hwkit.errors import UsageError
    from hwkit.plugins.exporters.options import parse_options

    given = {name: value for name, value in flags.items() if value is not None}
    where = {name: FLAGS[name] for name in given}
    for key, value in parse_pairs(pairs).items():
        if key in given:
            raise UsageError(f"--option {key}: given as {FLAGS.get(key, key)} too")
        given[key] = value
        where[key] = f"--option {key}"
    parsed = parse_options(kind, exporter.options_model, given, flags=where)
    fields = set(parsed.model_fields_set)
    return {name: getattr(parsed, name) for name in fields}


def register(app: typer.Typer) -> None:
    @app.command("export", cls=ExportCommand)
    def export_cmd(
        kind: str = typer.Argument(..., help="a registered exporter (hwkit plugins lists them)"),
        source: str = typer.Argument(..., help="run directory, HF model directory or model name"),
        out: Path | None = typer.Option(None, "--out", "-o", help="output directory"),
        quant: str | None = typer.Option(
            None, "--quant", "-q", help="gguf/ollama: f16|q8_0|q4_k_m; openvino: fp16|int8|int4"
        ),
        system: str | None = typer.Option(None, "--system", help="ollama: SYSTEM persona"),
        template_family: str | None = typer.Option(
            None,
            "--template-family",
            help="ollama: chatml|llama3|llama3.1|mistral (default: detect)",
        ),
        temperature: float | None = typer.Option(
            None, "--temperature", help="ollama PARAMETER (default 0.7)"
        ),
        num_ctx: int | None = typer.Option(None, "--num-ctx", help="ollama PARAMETER"),
        device: str | None = typer.Option(
            None, "--device", help="openvino: OpenVINO device to verify on (default CPU)"
        ),
        min_agreement: float | None = typer.Option(
            None, "--min-agreement", help="top-1 agreement required (default per format)"
        ),
        no_verify: bool = typer.Option(
            False, "--no-verify", help="skip verification (gguf f16/q8_0: the llama.cpp check)"
        ),
        kv_cache: bool = typer.Option(
            False,
            "--kv-cache",
            help="openvino: a stateful KV-cache IR for generation (the openvino runtime)",
        ),
        option: list[str] = typer.Option(
            [], "--option", help="KEY=VALUE: an exporter's own option (repeatable)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
    ) -> None:
        """Export a model or a LoRA run with a registered exporter (merged weights, GGUF,
        Ollama, OpenVINO IR, or a plugin's)."""
        from hwkit.plugins.exporters.report import read_figures
        from hwkit.runtime import current

        exporter_cls = current().plugins.exporters.get(kind)
        flags = {
            "quant": quant,
            "system": system,
            "template_family": template_family,
            "temperature": temperature,
            "num_ctx": num_ctx,
            "device": device,
            "min_agreement": min_agreement,
            "verify": False if no_verify else None,
            "kv_cache": True if kv_cache else None,
        }
        options = export_options(exporter_cls, kind, flags, option)
        out_dir = out or _default_out(source)
        target = out_dir / "merged" if kind == "merged" else out_dir
        result = exporter_cls().export(Path(source), target, **options)
        figures = read_figures(result)
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
