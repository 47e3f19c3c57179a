"""The ``ollama`` exporter: a verified GGUF plus a Modelfile beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from hwkit.atomic import staged_file
from hwkit.exporter import Exporter
from hwkit.log import get_logger
from hwkit.plugins.exporters.gguf_export import GGUFExporter, have_llama_cpp
from hwkit.plugins.exporters.modelfile import (
    build_modelfile,
    default_system,
    detect_family,
    family_by_name,
)
from hwkit.plugins.exporters.options import GGUFOptions, OllamaOptions, parse_options
from hwkit.plugins.exporters.report import read_figures, update_report
from hwkit.plugins.runtimes.transformers import load_config, load_tokenizer

log = get_logger(__name__)


class OllamaExporter(Exporter):
    """``out_dir/<name>-<quant>.gguf`` and ``out_dir/Modelfile`` (``ollama create NAME -f``).

    ``gguf`` (a GGUF file already exported from the same source) skips writing a new one;
    ``model`` is the torch model when the caller has it loaded. Neither is a user option.
    """

    name = "ollama"
    description = "a verified GGUF and a Modelfile whose TEMPLATE renders the HF chat template"
    options_model: ClassVar[type[OllamaOptions]] = OllamaOptions
    conformance_requires: ClassVar[tuple[str, ...]] = ("gguf", "llama_cpp")
    conformance_options: ClassVar[dict[str, Any]] = {"quant": "f16"}

    def export(
        self,
        source: Path,
        output: Path,
        *,
        gguf: Path | None = None,
        model: Any = None,
        **options: Any,
    ) -> Path:
        from hwkit.models import resolve

        opts = parse_options(self.name, self.options_model, options)
        src = resolve(source)
        tokenizer = load_tokenizer(src)
        family = (
            family_by_name(opts.template_family)
            if opts.template_family
            else detect_family(tokenizer.chat_template)
        )
        system = opts.system or src.system or default_system(tokenizer)
        if gguf is None:
            gguf_options = opts.model_dump(include=set(GGUFOptions.model_fields))
            gguf_options["quant"] = opts.quant or ("q4_k_m" if have_llama_cpp() else "q8_0")
            gguf = GGUFExporter().export(source, output, model=model, resolved=src, **gguf_options)
        gguf = Path(gguf)
        ctx = int(load_config(src).get("max_position_embeddings", 2048))
        text = build_modelfile(
            gguf_name=gguf.name,
            family=family,
            system=system,
            temperature=opts.temperature,
            num_ctx=opts.num_ctx or min(ctx, 4096),
        )
        final = Path(output) / "Modelfile"
        with staged_file(final) as tmp:
            tmp.write_text(text, encoding="utf-8")
        gguf_figures = read_figures(gguf)
        update_report(
            Path(output),
            "Modelfile",
            {
                "exporter": self.name,
                "gguf": gguf.name,
                "template_family": family.name,
                "system": system,
                "verified": bool(gguf_figures.get("verified", False)),
            },
        )
        log.info("export.ollama", modelfile=str(final), gguf=gguf.name, family=family.name)
        return final
