"""The ``openvino`` exporter: OpenVINO IR (FP16 weights, or INT8 weights via NNCF).

The IR is converted from the torch model with ``openvino.convert_model`` and takes
``input_ids``/``attention_mask`` and returns full-sequence logits: no KV cache. That is
what verification needs and what a re-ranker or scorer uses; token-by-token generation
re-runs the whole prefix (see docs/export.md).
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
    agreement,
    prompt_token_ids,
    require_agreement,
    torch_reference,
)
from hwkit.plugins.runtimes.transformers import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    import numpy as np

log = get_logger(__name__)

PRECISIONS = ("fp16", "int8")
THRESHOLDS = {"fp16": 0.99, "int8": 0.90}
DECISIVE_THRESHOLDS = {"fp16": 0.99, "int8": 0.97}
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


def openvino_argmax(xml: Path, seqs: list[list[int]], device: str = "CPU") -> list[np.ndarray]:
    """Argmax of the IR's logits at every position, compiled for ``device``."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), device)
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
    return sorted(set(out), key=PRECISIONS.index)  # fp16 first: INT8 compression is in place


class OpenVINOExporter(Exporter):
    """``export(source, out_dir, precision="fp16")`` -> ``out_dir/openvino-fp16/``.

    ``precision="fp16,int8"`` writes both from one conversion and returns ``out_dir``.
    ``model`` is the torch model when the caller has it loaded (not a user option).
    """

    name = "openvino"
    description = "OpenVINO IR (FP16, or INT8 weights via NNCF), verified in OpenVINO"
    options_model: ClassVar[type[OpenVINOOptions]] = OpenVINOOptions
    conformance_requires: ClassVar[tuple[str, ...]] = ("openvino",)
    conformance_options: ClassVar[dict[str, Any]] = {"precision": "fp16"}

    def export(self, source: Path, output: Path, *, model: Any = None, **options: Any) -> Path:
        from hwkit.models import resolve

        opts = parse_options(self.name, self.options_model, options)
        precisions = _precisions(opts.precision)
        ov = require("openvino", purpose="OpenVINO export")
        src = resolve(source)
        start = time.perf_counter()
        model = model if model is not None else load_causal_lm(src)
        tokenizer = load_tokenizer(src)
        seqs = prompt_token_ids(tokenizer)
        reference = torch_reference(model, seqs) if opts.verify else None
        ov_model = convert(model)
        finals = []
        for precision in precisions:
            threshold = float(opts.min_agreement or THRESHOLDS[precision])
            if precision == "int8":
                from hwkit.plugins.nncf_tools import compress_int8_weights

                ov_model = compress_int8_weights(ov_model)
            final = Path(output) / f"openvino-{precision}"
            with staged_dir(final) as tmp:
                ov.save_model(ov_model, str(tmp / IR_NAME), compress_to_fp16=precision == "fp16")
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
