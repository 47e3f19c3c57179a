"""The ``ollama`` exporter: a verified GGUF plus a Modelfile beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwkit.exporter import Exporter
from hwkit.log import get_logger
from hwkit.plugins.exporters.gguf_export import GGUFExporter, have_llama_cpp
from hwkit.plugins.exporters.modelfile import (
    build_modelfile,
    default_system,
    detect_family,
    family_by_name,
)
from hwkit.plugins.exporters.source import resolve_source
from hwkit.plugins.exporters.staging import staged_file, update_report

log = get_logger(__name__)


class OllamaExporter(Exporter):
    """``out_dir/<name>-<quant>.gguf`` and ``out_dir/Modelfile`` (``ollama create NAME -f``)."""

    name = "ollama"

    def export(self, source: Path, output: Path, **options: Any) -> Path:
        src = resolve_source(source)
        tokenizer = src.load_tokenizer()
        family_name = options.get("template_family")
        family = (
            family_by_name(family_name) if family_name else detect_family(tokenizer.chat_template)
        )
        system = options.get("system") or src.system or default_system(tokenizer)
        quant = options.get("quant") or ("q4_k_m" if have_llama_cpp() else "q8_0")
        gguf = options.get("gguf")
        if gguf is None:
            gguf = GGUFExporter().export(
                source, output, **{**options, "quant": quant, "resolved": src}
            )
        gguf = Path(gguf)
        ctx = int(src.config().get("max_position_embeddings", 2048))
        text = build_modelfile(
            gguf_name=gguf.name,
            family=family,
            system=system,
            temperature=float(options.get("temperature", 0.7)),
            num_ctx=int(options.get("num_ctx") or min(ctx, 4096)),
        )
        final = Path(output) / "Modelfile"
        with staged_file(final) as tmp:
            tmp.write_text(text, encoding="utf-8")
        update_report(
            Path(output),
            "Modelfile",
            {
                "exporter": self.name,
                "gguf": gguf.name,
                "template_family": family.name,
                "system": system,
            },
        )
        log.info("export.ollama", modelfile=str(final), gguf=gguf.name, family=family.name)
        return final
