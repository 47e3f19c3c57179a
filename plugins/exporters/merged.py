"""LoRA adapter + base model -> one merged Hugging Face directory (safetensors)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from hwkit.atomic import staged_dir, write_json_atomic
from hwkit.errors import NotFoundError
from hwkit.exporter import Exporter, ExportOptions
from hwkit.log import get_logger
from hwkit.plugins.exporters.errors import VerificationError
from hwkit.plugins.exporters.options import parse_options
from hwkit.plugins.exporters.report import REPORT
from hwkit.plugins.exporters.verify import prompt_token_ids

log = get_logger(__name__)

ATOL = 1e-3  # float32 merge: observed max |diff| is ~1e-5 on SmolLM2 (docs/export.md)


def merged_logits_check(peft_model: Any, tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    """Merge ``peft_model`` and compare its logits with the adapter-applied ones on the
    fixed prompts; returns the merged model and the figures."""
    import torch

    seqs = prompt_token_ids(tokenizer)
    with torch.inference_mode():
        before = [peft_model(input_ids=torch.tensor([s])).logits[0] for s in seqs]
        with peft_model.disable_adapter():
            base = [peft_model(input_ids=torch.tensor([s])).logits[0] for s in seqs]
        merged = peft_model.merge_and_unload().eval()
        after = [merged(input_ids=torch.tensor([s])).logits[0] for s in seqs]
    max_diff = max(float((a - b).abs().max()) for a, b in zip(before, after, strict=True))
    top1 = sum(
        int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(before, after, strict=True)
    )
    positions = sum(len(s) for s in seqs)
    close = all(
        torch.allclose(a, b, atol=ATOL, rtol=1e-3) for a, b in zip(before, after, strict=True)
    )
    effect = max(float((a - b).abs().max()) for a, b in zip(before, base, strict=True))
    return merged, {
        "max_abs_logit_diff": max_diff,
        "adapter_effect": effect,
        "allclose": close,
        "atol": ATOL,
        "top1_agreement": top1 / positions,
        "positions": positions,
    }


class MergedExporter(Exporter):
    """Writes ``output`` as a merged model directory (weights, tokenizer, chat template)."""

    name = "merged"
    description = "a LoRA run merged into its base: one safetensors HF directory"
    options_model = ExportOptions
    # for hwkit's conformance kit: what to export (a LoRA run of SmolLM2)
    conformance_source: ClassVar[str] = "lora-run"

    def export(self, source: Path, output: Path, **options: Any) -> Path:
        from hwkit.models import resolve
        from hwkit.plugins.runtimes.transformers import load_causal_lm, load_tokenizer

        opts = parse_options(self.name, self.options_model, options)
        src = resolve(source)
        if src.adapter is None:
            raise NotFoundError(
                f"{str(source)!r} has no LoRA adapter ({'adapter_config.json'}) to merge",
                hint="pass a LoRA run directory; a full model needs no merge",
            )
        start = time.perf_counter()
        tokenizer = load_tokenizer(src)
        if opts.verify:
            merged, figures = merged_logits_check(load_causal_lm(src, merge=False), tokenizer)
            if not figures["allclose"]:
                raise VerificationError(
                    "merged logits differ from adapter logits by "
                    f"{figures['max_abs_logit_diff']:.3g} (> {ATOL})",
                    hint="the adapter may use a feature merge_and_unload does not support",
                )
        else:
            merged, figures = load_causal_lm(src, merge=True), {}
        output = Path(output)
        with staged_dir(output) as tmp:
            merged.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            if not tokenizer.chat_template:
                log.warning("merge.no_chat_template", source=str(source))
            figures.update(
                exporter=self.name,
                source=str(source),
                base=str(src.weights_dir),
                verified=opts.verify,
                seconds=round(time.perf_counter() - start, 2),
            )
            write_json_atomic(tmp / REPORT, figures)
        log.info("export.merged", output=str(output), max_diff=figures.get("max_abs_logit_diff"))
        return output
