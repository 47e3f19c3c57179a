"""The ``gguf`` exporter: f16/q8_0 written by us, q4_k_m by llama.cpp's quantizer, every
file verified against the torch model in llama.cpp before it gets its final name."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.atomic import staged_file
from hwkit.errors import UnavailableError, UsageError
from hwkit.exporter import Exporter
from hwkit.extras import is_available, require
from hwkit.log import get_logger
from hwkit.plugins.exporters.gguf_writer import check_supported, write_gguf
from hwkit.plugins.exporters.options import GGUFOptions, parse_options
from hwkit.plugins.exporters.report import update_report
from hwkit.plugins.exporters.verify import (
    agreement,
    llama_cpp_argmax,
    prompt_token_ids,
    require_agreement,
    tokenizer_agreement,
    torch_reference,
)
from hwkit.plugins.runtimes.transformers import load_causal_lm, load_config, load_tokenizer

if TYPE_CHECKING:
    from hwkit.models import ResolvedModel

log = get_logger(__name__)

QUANTS = ("f16", "q8_0", "q4_k_m")
# Top-1 next-token agreement with the float32 torch model required before renaming, over all
# positions and over decisive ones (torch's top-1 leads by >= 0.5 logits). The gates tell a
# correct export from a broken one: on SmolLM2-135M (460 positions) a correct export measures
# f16 1.000/1.000, q8_0 0.963/1.000 and q4_k_m 0.889/0.959 (llama.cpp's own quantizer gives
# the same figures), an export with unpermuted Q/K rows 0.38/0.42 (docs/export.md).
THRESHOLDS = {"f16": 0.99, "q8_0": 0.95, "q4_k_m": 0.85}
DECISIVE_THRESHOLDS = {"f16": 0.99, "q8_0": 0.99, "q4_k_m": 0.93}


def have_llama_cpp() -> bool:
    return is_available("llama_cpp")


def quantize_q4_k_m(src: Path, dst: Path, threads: int = 0) -> None:
    """llama.cpp's own quantizer (as ``llama-quantize``) through llama-cpp-python."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads or (os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise UnavailableError(f"llama.cpp failed to quantize {src.name} to q4_k_m (code {rc})")


class GGUFExporter(Exporter):
    """``export(source, out_dir, quant="q8_0")`` -> ``out_dir/<name>-<quant>.gguf``.

    ``model`` (the torch model, already loaded) and ``resolved`` (the source, already
    resolved) are for callers that have them; they are not user options.
    """

    name = "gguf"
    description = "GGUF for llama.cpp (f16, q8_0 written here; q4_k_m by llama.cpp), verified"
    options_model: ClassVar[type[GGUFOptions]] = GGUFOptions
    # for hwkit's conformance kit: what verifying needs, and the cheapest verified export
    conformance_requires: ClassVar[tuple[str, ...]] = ("gguf", "llama_cpp")
    conformance_options: ClassVar[dict[str, Any]] = {"quant": "f16"}

    def export(
        self,
        source: Path,
        output: Path,
        *,
        model: Any = None,
        resolved: ResolvedModel | None = None,
        **options: Any,
    ) -> Path:
        from hwkit.models import resolve

        opts = parse_options(self.name, self.options_model, options)
        quant = str(opts.quant or "q8_0").lower()
        if quant not in QUANTS:
            raise UsageError(
                f"unknown GGUF quantisation {quant!r}", hint=f"choose from {', '.join(QUANTS)}"
            )
        threshold = float(opts.min_agreement or THRESHOLDS[quant])
        src = resolved or resolve(source)
        check_supported(load_config(src))
        require("gguf", purpose="GGUF export")
        if quant == "q4_k_m":
            require("llama_cpp", purpose="q4_k_m (llama.cpp's quantizer)")
        if opts.verify:
            require("llama_cpp", purpose="verifying a GGUF export (--no-verify skips it)")
        out_dir = Path(output)
        final = out_dir / f"{opts.name or src.label}-{quant}.gguf"
        start = time.perf_counter()
        model = model if model is not None else load_causal_lm(src)
        tokenizer = load_tokenizer(src)
        with staged_file(final) as tmp:
            figures = self._write(src, model, tokenizer, tmp, quant, out_dir)
            figures["file_bytes"] = tmp.stat().st_size
            if opts.verify:
                figures.update(self._verify(model, tokenizer, tmp))
                require_agreement(
                    figures,
                    final.name,
                    threshold,
                    DECISIVE_THRESHOLDS[quant],
                    hint="nothing was written under the final name; try a finer quant",
                )
            figures.update(verified=opts.verify, seconds=round(time.perf_counter() - start, 2))
        figures.update(exporter=self.name, quant=quant, source=str(source), file=final.name)
        update_report(out_dir, final.name, figures)
        log.info(
            "export.gguf", file=str(final), quant=quant, agreement=figures.get("top1_agreement")
        )
        return final

    def _write(
        self,
        src: ResolvedModel,
        model: Any,
        tokenizer: Any,
        tmp: Path,
        quant: str,
        out_dir: Path,
    ) -> dict[str, Any]:
        kwargs = {
            "state": model.state_dict(),
            "config": load_config(src),
            "tokenizer": tokenizer,
            "tokenizer_dir": src.tokenizer_dir or src.weights_dir,
            "name": src.label,
        }
        if quant != "q4_k_m":
            return {"tensor_types": write_gguf(tmp, quant=quant, **kwargs)}
        fd, f16 = tempfile.mkstemp(prefix=".f16-", suffix=".gguf.partial", dir=out_dir)
        os.close(fd)
        try:
            write_gguf(Path(f16), quant="f16", **kwargs)
            quantize_q4_k_m(Path(f16), tmp)
        finally:
            Path(f16).unlink(missing_ok=True)
        return {"quantizer": "llama.cpp llama_model_quantize (LLAMA_FTYPE_MOSTLY_Q4_K_M)"}

    def _verify(self, model: Any, tokenizer: Any, gguf: Path) -> dict[str, Any]:
        seqs = prompt_token_ids(tokenizer)
        figures = agreement(torch_reference(model, seqs), llama_cpp_argmax(gguf, seqs))
        figures["tokenizer_agreement"] = tokenizer_agreement(tokenizer, gguf)
        figures["runtime"] = "llama-cpp-python " + _llama_cpp_version()
        return figures


def _llama_cpp_version() -> str:
    import llama_cpp

    return str(getattr(llama_cpp, "__version__", "?"))
