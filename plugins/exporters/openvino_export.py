"""The ``openvino`` exporter: OpenVINO IR (FP16 weights, or INT8/INT4 weights via NNCF).

By default the IR is converted from the torch model with ``openvino.convert_model`` and
takes ``input_ids``/``attention_mask`` and returns full-sequence logits: no KV cache. That
is what verification needs and what a re-ranker or scorer uses. ``kv_cache=True``
(``--kv-cache``) writes instead the stateful KV-cache IR that OpenVINO GenAI generates
with, and the tokenizer IRs beside it (:mod:`.openvino_stateful`), into
``openvino-kv-PRECISION/`` (see docs/export.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.atomic import staged_dir, write_json_atomic
from hwkit.errors import UsageError
from hwkit.exporter import Exporter
from hwkit.extras import require
from hwkit.log import get_logger
from hwkit.plugins.exporters.options import OpenVINOOptions, parse_options
from hwkit.plugins.exporters.report import REPORT, update_report
from hwkit.plugins.exporters.verify import (
    Reference,
    agreement,
    prompt_token_ids,
    require_agreement,
    torch_reference,
)
from hwkit.plugins.runtimes.transformers import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    import numpy as np

log = get_logger(__name__)

PRECISIONS = ("fp16", "int8", "int4")
THRESHOLDS = {"fp16": 0.99, "int8": 0.90, "int4": 0.70}
DECISIVE_THRESHOLDS = {"fp16": 0.99, "int8": 0.97, "int4": 0.75}
IR_NAME = "openvino_model.xml"


def convert(model: Any) -> Any:
    """torch causal LM -> ``ov.Model`` with dynamic batch and sequence length."""
    import openvino as ov
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits

    example = {
        "input_ids": torch.ones(1, 8, dtype=torch.long),
        "attention_mask": torch.ones(1, 8, dtype=torch.long),
    }
    with torch.inference_mode():
        ov_model = ov.convert_model(
            _Logits(model.eval()),
            example_input=example,
            input=[
                ("input_ids", ov.PartialShape([-1, -1]), ov.Type.i64),
                ("attention_mask", ov.PartialShape([-1, -1]), ov.Type.i64),
            ],
        )
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    return ov_model


def exact_props(device: str) -> dict[str, str]:
    """Compile settings under which a check measures the IR, not the device's default
    arithmetic: float32 compute on a CPU or GPU (OpenVINO's CPU plugin computes in bf16 by
    default wherever the CPU has bf16 instructions, AVX512_BF16 or AMX). An NPU picks its
    own precision and takes no hint."""
    return {} if device.split(".")[0] == "NPU" else {"INFERENCE_PRECISION_HINT": "f32"}


def openvino_argmax(xml: Path, seqs: list[list[int]], device: str = "CPU") -> list[np.ndarray]:
    """Argmax of the IR's logits at every position, compiled for ``device`` in float32."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), device, exact_props(device))
    out = []
    for ids in seqs:
        arr = np.asarray([ids], dtype=np.int64)
        logits = compiled({"input_ids": arr, "attention_mask": np.ones_like(arr)})[0]
        out.append(np.asarray(logits)[0].argmax(-1))
    return out


def _precisions(value: Any) -> list[str]:
    raw = value if isinstance(value, list | tuple) else str(value or "fp16").split(",")
    out = []
    for item in raw:
        p = {"f16": "fp16", "q8_0": "int8"}.get(
            str(item).strip().lower(), str(item).strip().lower()
        )
        if p not in PRECISIONS:
            raise UsageError(
                f"unknown OpenVINO precision {p!r}", hint=f"choose from {', '.join(PRECISIONS)}"
            )
        out.append(p)
    return sorted(set(out), key=PRECISIONS.index)


def compress(ov_model: Any, precision: str) -> Any:
    """``ov_model`` itself for fp16 (rounded when saved); a compressed copy for int8/int4."""
    if precision == "fp16":
        return ov_model
    from hwkit.plugins.nncf_tools import compress_int4_weights, compress_int8_weights

    squeeze = compress_int8_weights if precision == "int8" else compress_int4_weights
    return squeeze(ov_model.clone())


def weight_types(ov_model: Any) -> list[str]:
    """Element types of the model's weight constants (f16, u8, i4...), for the figures."""
    found = {
        op.get_output_element_type(0).get_type_name()
        for op in ov_model.get_ops()
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) >= 2
    }
    return sorted(found)


class OpenVINOExporter(Exporter):
    """``export(source, out_dir, precision="fp16")`` -> ``out_dir/openvino-fp16/``;
    ``kv_cache=True`` -> ``out_dir/openvino-kv-fp16/``.

    ``precision="fp16,int8"`` writes both from one conversion and returns ``out_dir``.
    ``model`` is the torch model when the caller has it loaded (not a user option).
    """

    name = "openvino"
    description = (
        "OpenVINO IR (FP16, or INT8/INT4 weights via NNCF; --kv-cache: stateful, for "
        "OpenVINO GenAI), verified in OpenVINO"
    )
    options_model: ClassVar[type[OpenVINOOptions]] = OpenVINOOptions
    conformance_requires: ClassVar[tuple[str, ...]] = ("openvino",)
    conformance_options: ClassVar[dict[str, Any]] = {"precision": "fp16"}

    def export(self, source: Path, output: Path, *, model: Any = None, **options: Any) -> Path:
        from hwkit.models import resolve

        opts = parse_options(self.name, self.options_model, options)
        precisions = _precisions(opts.precision)
        ov = require("openvino", purpose="OpenVINO export")
        if opts.kv_cache:
            from hwkit.plugins.exporters.openvino_stateful import verify_props

            if opts.verify:
                verify_props(opts.device)  # a device the check cannot run on: refused now
            require("openvino_tokenizers", purpose="the KV-cache IR's tokenizer")
        src = resolve(source)
        start = time.perf_counter()
        model = model if model is not None else load_causal_lm(src)
        tokenizer = load_tokenizer(src)
        seqs = prompt_token_ids(tokenizer)
        reference = torch_reference(model, seqs) if opts.verify else None
        if opts.kv_cache:
            return self._export_kv(
                model, tokenizer, seqs, reference, precisions, opts, Path(output), source, start
            )
        ov_model = convert(model)
        finals = []
        for precision in precisions:
            threshold = float(opts.min_agreement or THRESHOLDS[precision])
            final = Path(output) / f"openvino-{precision}"
            compressed = compress(ov_model, precision)
            with staged_dir(final) as tmp:
                ov.save_model(compressed, str(tmp / IR_NAME), compress_to_fp16=precision == "fp16")
                tokenizer.save_pretrained(str(tmp))
                model.config.save_pretrained(str(tmp))
                figures: dict[str, Any] = {}
                if reference is not None:
                    candidate = openvino_argmax(tmp / IR_NAME, seqs, opts.device)
                    figures = agreement(reference, candidate)
                    require_agreement(
                        figures,
                        f"OpenVINO {precision}",
                        threshold,
                        DECISIVE_THRESHOLDS[precision],
                        hint="nothing was written under the final name",
                    )
                figures.update(
                    device=opts.device,
                    precision=precision,
                    runtime=f"openvino {ov.get_version()}",
                    kv_cache=False,
                    verified=opts.verify,
                    exporter=self.name,
                    source=str(source),
                    seconds=round(time.perf_counter() - start, 2),
                )
                write_json_atomic(tmp / REPORT, figures)
            update_report(Path(output), final.name, figures)
            log.info("export.openvino", dir=str(final), agreement=figures.get("top1_agreement"))
            finals.append(final)
        return finals[0] if len(finals) == 1 else Path(output)

    def _export_kv(
        self,
        model: Any,
        tokenizer: Any,
        seqs: list[list[int]],
        reference: Reference | None,
        precisions: list[str],
        opts: OpenVINOOptions,
        output: Path,
        source: Path,
        start: float,
    ) -> Path:
        """The stateful IR and tokenizer IRs per precision, each verified before its rename:
        top-1 agreement (each prompt in one call), greedy generation through the state
        against torch's, the tokenizer IRs against the HF tokenizer."""
        import openvino as ov

        from hwkit.plugins.exporters import openvino_stateful as kv

        greedy_ref = kv.torch_greedy(model, kv.greedy_prompt_ids(tokenizer)) if opts.verify else []
        ov_model = kv.convert_stateful(model)
        tok_ir, detok_ir = kv.convert_tokenizers(tokenizer)
        texts = [tokenizer.decode(ids) for ids in seqs]
        hint = "nothing was written under the final name"
        finals = []
        for precision in precisions:
            threshold = float(opts.min_agreement or THRESHOLDS[precision])
            final = output / f"openvino-kv-{precision}"
            compressed = compress(ov_model, precision)
            with staged_dir(final) as tmp:
                ov.save_model(compressed, str(tmp / IR_NAME), compress_to_fp16=precision == "fp16")
                ov.save_model(tok_ir, str(tmp / kv.TOKENIZER_XML))
                ov.save_model(detok_ir, str(tmp / kv.DETOKENIZER_XML))
                tokenizer.save_pretrained(str(tmp))
                model.config.save_pretrained(str(tmp))
                model.generation_config.save_pretrained(str(tmp))
                figures: dict[str, Any] = {}
                if reference is not None:
                    runner = kv.StatefulRunner(tmp / IR_NAME, opts.device)
                    figures = agreement(reference, runner.argmax(seqs))
                    label = f"OpenVINO KV-cache {precision}"
                    require_agreement(
                        figures, label, threshold, DECISIVE_THRESHOLDS[precision], hint=hint
                    )
                    eos = kv.eos_ids(model)
                    replies = [runner.greedy(g.prompt, kv.GREEDY_TOKENS, eos) for g in greedy_ref]
                    figures.update(kv.greedy_figures(greedy_ref, replies))
                    if precision == "fp16":
                        kv.require_greedy(figures, label, hint=hint)
                    figures.update(
                        kv.tokenizer_figures(tmp, tokenizer, texts, [g.tokens for g in greedy_ref])
                    )
                    kv.require_tokenizer(figures, hint=hint)
                    del runner
                figures.update(
                    device=opts.device,
                    precision=precision,
                    weight_types=weight_types(ov.Core().read_model(str(tmp / IR_NAME))),
                    runtime=f"openvino {ov.get_version()}",
                    kv_cache=True,
                    inputs=list(kv.INPUTS),
                    states=len(compressed.get_sinks()),
                    verified=opts.verify,
                    exporter=self.name,
                    source=str(source),
                    seconds=round(time.perf_counter() - start, 2),
                )
                write_json_atomic(tmp / REPORT, figures)
            update_report(output, final.name, figures)
            log.info("export.openvino", dir=str(final), kv_cache=True, **_summary(figures))
            finals.append(final)
        return finals[0] if len(finals) == 1 else output


def _summary(figures: dict[str, Any]) -> dict[str, Any]:
    keys = ("top1_agreement", "greedy_equal", "greedy_prefix_agreement")
    return {k: figures[k] for k in keys if k in figures}
