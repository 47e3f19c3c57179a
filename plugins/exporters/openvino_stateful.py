"""The KV-cache (stateful) OpenVINO IR that OpenVINO GenAI's ``LLMPipeline`` runs.

The IR is the one optimum-intel exports for decoders: inputs ``input_ids``,
``attention_mask`` (past and current tokens), ``position_ids`` and ``beam_idx``; output
``logits`` (every position of the call); the keys and values of every layer are internal
state (``ReadValue``/``Assign`` pairs made by OpenVINO's MakeStateful transformation, read
through a ``Gather`` on ``beam_idx`` so beam search can reorder them, zero-length when a
sequence starts). It is traced from the torch model with the cache as explicit tensors and
the causal mask built in the graph from the two lengths, then made stateful, as
``optimum/exporters/openvino/stateful.py`` does. ``openvino_tokenizers`` converts the
tokenizer into ``openvino_tokenizer.xml``/``openvino_detokenizer.xml``; the chat template
travels in the tokenizer IR's ``rt_info``, where GenAI reads it.

Verification, on top of the full-sequence IR's top-1 agreement (each prompt in one call):
the IR's greedy generation, token by token through its state, against the float32 torch
model's ``generate`` on a few chats; the tokenizer IR against the HF tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import UsageError
from hwkit.plugins.exporters.errors import VerificationError
from hwkit.plugins.exporters.verify import DECISIVE_MARGIN, PROMPTS

if TYPE_CHECKING:
    import numpy as np

TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
INPUTS = ("input_ids", "attention_mask", "position_ids", "beam_idx")
# Greedy check: the user turns of the first verification prompts, this many new tokens.
GREEDY_PROMPTS = 4
GREEDY_TOKENS = 16


def check_supported(model: Any) -> None:
    """Refuse models whose cache this conversion does not describe (sliding-window or
    linear-attention layers, encoder-decoders) in one line, before any tracing."""
    config = model.config
    arch = ", ".join(getattr(config, "architectures", None) or [type(model).__name__])
    if getattr(config, "is_encoder_decoder", False):
        raise UsageError(
            f"KV-cache OpenVINO export supports decoder-only models, not {arch}",
            hint="export the full-sequence IR (without --kv-cache)",
        )
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    sliding = getattr(config, "sliding_window", None) and getattr(
        config, "use_sliding_window", True
    )
    if layer_types != {"full_attention"} or sliding:
        kinds = ", ".join(sorted(layer_types | ({"sliding_window"} if sliding else set())))
        raise UsageError(
            f"KV-cache OpenVINO export supports full-attention decoders; {arch} has {kinds} layers",
            hint="export the full-sequence IR (without --kv-cache)",
        )


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes the cache: ``cache`` (transformers 5.x) or
    ``past_key_values`` (earlier)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a transformers cache object."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache.to_legacy_cache()]  # pragma: no cover - transformers 4.x


def _cache_from(model: Any, past: Sequence[Any]) -> Any:
    """A ``DynamicCache`` holding ``past`` (keys and values, layer after layer)."""
    from transformers import DynamicCache

    pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
    cache: Any
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # pragma: no cover - transformers 4.x
        return getattr(DynamicCache, "from_legacy_cache")(tuple(pairs))  # noqa: B009
    kinds = {type(layer).__name__ for layer in cache.layers}
    if len(cache.layers) != len(pairs) or kinds != {"DynamicLayer"}:
        raise UsageError(
            f"KV-cache OpenVINO export supports full-attention decoders; "
            f"{type(model).__name__}'s cache has {', '.join(sorted(kinds))} layers",
            hint="export the full-sequence IR (without --kv-cache)",
        )
    for layer, (keys, values) in zip(cache.layers, pairs, strict=True):
        # Filled directly: the layer's lazy start concatenates onto an empty 1-D tensor,
        # which tracing would keep in the graph.
        layer.keys, layer.values = keys, values
        layer.device = keys.device
        layer.is_initialized = True
    return cache


def kv_shapes(model: Any) -> list[tuple[int, int]]:
    """(KV heads, head size) of each layer's cache, read from one small forward pass."""
    import torch

    ids = torch.ones(1, 2, dtype=torch.long)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    return [(int(k.shape[1]), int(k.shape[3])) for k, _ in _layers(cache)]


def convert_stateful(model: Any) -> Any:
    """torch causal LM -> stateful ``ov.Model`` (dynamic batch and lengths; f32 state)."""
    import openvino as ov
    import torch

    check_supported(model)
    model = model.eval()
    shapes = kv_shapes(model)
    cache_kwarg = _cache_kwarg(model)

    class _WithCache(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            position_ids: torch.Tensor,
            *past: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            # The causal mask from the lengths: query i (at past + i) sees keys 0..past + i,
            # and only where attention_mask is set. A 4-D mask reaches attention as given.
            current, total = input_ids.shape[1], attention_mask.shape[1]
            query = torch.arange(current) + (total - current)
            key = torch.arange(total)
            allowed = (key[None, :] <= query[:, None])[None, None] & attention_mask[
                :, None, None, :
            ].bool()
            mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                ~allowed, torch.finfo(torch.float32).min
            )
            out = self.inner(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=True,
                **{cache_kwarg: _cache_from(self.inner, past)},
            )
            cache = getattr(out, "cache", None) or out.past_key_values
            flat: list[torch.Tensor] = []
            for keys, values in _layers(cache):
                flat += [keys, values]
            return (out.logits, *flat)

    past_len, new_len = 3, 5
    example = (
        torch.ones(1, new_len, dtype=torch.long),
        torch.ones(1, past_len + new_len, dtype=torch.long),
        torch.arange(past_len, past_len + new_len)[None],
        *[torch.zeros(1, h, past_len, d) for h, d in shapes for _ in range(2)],
    )
    dynamic_2d = (ov.PartialShape([-1, -1]), ov.Type.i64)
    inputs = [dynamic_2d] * 3 + [
        (ov.PartialShape([-1, h, -1, d]), ov.Type.f32) for h, d in shapes for _ in range(2)
    ]
    with torch.inference_mode():
        ov_model = ov.convert_model(_WithCache(model), example_input=example, input=inputs)
    kv_in = [f"past_key_values.{i}.{kind}" for i in range(len(shapes)) for kind in ("key", "value")]
    kv_out = [f"present.{i}.{kind}" for i in range(len(shapes)) for kind in ("key", "value")]
    for port, name in zip(ov_model.inputs, [*INPUTS[:3], *kv_in], strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, ["logits", *kv_out], strict=True):
        port.get_tensor().set_names({name})
    make_stateful(ov_model, kv_in, kv_out)
    return ov_model


def make_stateful(ov_model: Any, kv_in: list[str], kv_out: list[str]) -> None:
    """Hide the cache inputs/outputs as state, read through ``beam_idx``, zero-length at
    the start of a sequence (optimum-intel's fuse_cache_reorder, make_stateful and
    build_state_initializer)."""
    import numpy as np
    import openvino as ov
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation

    batch = ov_model.input("input_ids").get_partial_shape()[0]
    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([batch]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    ov_model.add_parameters([beam_idx])
    for name in kv_in:
        port = ov_model.input(name)
        consumers = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for consumer in consumers:
            consumer.replace_source_output(gathered.output(0))
    ov_model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(ov_model, dict(zip(kv_in, kv_out, strict=True)))
    ids = ov_model.input("input_ids")
    rows = opset13.gather(
        opset13.shape_of(ids, output_type="i64"), opset13.constant([0]), opset13.constant(0)
    )
    for op in ov_model.get_ops():
        if op.get_type_name() != "ReadValue":
            continue
        dims: list[Any] = [dim.min_length for dim in op.get_output_partial_shape(0)]
        dims[0] = rows
        parts = [
            opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d
            for d in dims
        ]
        zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
        op.set_arguments([opset13.broadcast(zero, opset13.concat(parts, axis=0))])
    ov_model.validate_nodes_and_infer_types()


def is_stateful_xml(xml: Path) -> bool:
    """Whether an IR's XML keeps state (``ReadValue`` layers) and takes ``beam_idx``:
    read from the XML text, no weights loaded."""
    import xml.etree.ElementTree as ET

    stateful = beam = False
    for _, elem in ET.iterparse(str(xml)):
        if elem.tag == "layer":
            kind, name = elem.get("type"), elem.get("name")
            stateful = stateful or kind == "ReadValue"
            beam = beam or (kind == "Parameter" and name == "beam_idx")
            if stateful and beam:
                return True
            elem.clear()
    return False


def convert_tokenizers(tokenizer: Any) -> tuple[Any, Any]:
    """The tokenizer and detokenizer IRs (the chat template in the tokenizer's rt_info)."""
    from hwkit.extras import require

    require("openvino_tokenizers", purpose="the KV-cache IR's tokenizer")
    from openvino_tokenizers import convert_tokenizer

    converted: tuple[Any, Any] = convert_tokenizer(tokenizer, with_detokenizer=True)
    return converted


def verify_props(device: str) -> dict[str, str]:
    """Compile settings that make the check compare the graph, not reduced-precision
    arithmetic: float32 compute and (on the CPU, whose cache is u8 by default) f32 state."""
    base = device.split(".")[0]
    if base == "NPU":
        raise UsageError(
            "a KV-cache IR is verified on the CPU or a GPU; the NPU runs it through "
            "OpenVINO GenAI's static pipeline",
            hint="drop --device NPU (verify on CPU), then load it with the openvino runtime",
        )
    from hwkit.plugins.exporters.openvino_export import exact_props

    props = exact_props(device)
    if base == "CPU":
        props["KV_CACHE_PRECISION"] = "f32"
    return props


def eos_ids(model: Any) -> set[int]:
    """The token ids that end a reply (the generation config's ``eos_token_id``)."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


@dataclass
class Greedy:
    """The torch model's greedy reply to one chat: tokens and top-1 minus top-2 logit."""

    prompt: list[int]
    tokens: list[int]
    margins: list[float]


def greedy_prompt_ids(tokenizer: Any, count: int = GREEDY_PROMPTS) -> list[list[int]]:
    """The user turns of the first ``count`` verification prompts, rendered for a reply."""
    seqs = []
    for user, _ in PROMPTS[:count]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        seqs.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return seqs


def torch_greedy(
    model: Any, prompts: Sequence[list[int]], new: int = GREEDY_TOKENS
) -> list[Greedy]:
    """``model.generate`` greedily (float32 as loaded), with each step's logit margin."""
    import torch

    eos = sorted(eos_ids(model))
    out = []
    with torch.inference_mode():
        for ids in prompts:
            tensor = torch.tensor([ids])
            gen = model.generate(
                tensor,
                attention_mask=torch.ones_like(tensor),
                max_new_tokens=new,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=eos[0] if eos else 0,
                output_scores=True,
                return_dict_in_generate=True,
            )
            tokens = gen.sequences[0, len(ids) :].tolist()
            margins = []
            for scores in gen.scores:
                top = scores[0].float().topk(2).values
                margins.append(float(top[0] - top[1]))
            out.append(Greedy(list(ids), tokens, margins))
    return out


class StatefulRunner:
    """The stateful IR compiled for one device: prefill and token-by-token greedy."""

    def __init__(self, xml: Path, device: str) -> None:
        import openvino as ov

        compiled = ov.Core().compile_model(str(xml), device, verify_props(device))
        self.request = compiled.create_infer_request()

    def _step(self, ids: Sequence[int], past: int) -> np.ndarray:
        import numpy as np

        arr = np.asarray([list(ids)], dtype=np.int64)
        n = arr.shape[1]
        out = self.request.infer(
            {
                "input_ids": arr,
                "attention_mask": np.ones((1, past + n), dtype=np.int64),
                "position_ids": np.arange(past, past + n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
        )
        return np.asarray(out["logits"])[0]

    def argmax(self, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Argmax at every position of each sequence, each in one call from empty state."""
        out = []
        for ids in seqs:
            self.request.reset_state()
            out.append(self._step(ids, 0).argmax(-1))
        return out

    def greedy(self, prompt: Sequence[int], new: int, eos: set[int]) -> list[int]:
        """Greedy reply through the state: the prompt in one call, then a token per call."""
        self.request.reset_state()
        tokens: list[int] = []
        step: Sequence[int] = prompt
        past = 0
        for _ in range(new):
            logits = self._step(step, past)
            past += len(step)
            token = int(logits[-1].argmax())
            tokens.append(token)
            if token in eos:
                break
            step = [token]
        return tokens


def greedy_figures(reference: Sequence[Greedy], candidate: Sequence[list[int]]) -> dict[str, Any]:
    """How the IR's greedy replies compare with torch's: replies equal, share of tokens
    before the first difference, and torch's margin where each reply first differs."""
    equal = 0
    prefix = total = 0
    divergences = []
    for ref, cand in zip(reference, candidate, strict=True):
        same = 0
        while same < min(len(ref.tokens), len(cand)) and ref.tokens[same] == cand[same]:
            same += 1
        equal += int(ref.tokens == cand)
        prefix += same
        total += len(ref.tokens)
        if ref.tokens != cand and same < len(ref.margins):
            divergences.append(round(ref.margins[same], 4))
    return {
        "greedy_prompts": len(reference),
        "greedy_max_new_tokens": GREEDY_TOKENS,
        "greedy_equal": equal,
        "greedy_prefix_agreement": prefix / total if total else 0.0,
        "greedy_divergence_margins": divergences,
    }


def require_greedy(figures: dict[str, Any], label: str, hint: str) -> None:
    """Refuse an IR whose greedy reply leaves torch's where torch was decisive (its top-1
    led by at least ``DECISIVE_MARGIN``): a near-tie may flip on 16-bit weights, a
    decisive token may not."""
    decisive = [m for m in figures["greedy_divergence_margins"] if m >= DECISIVE_MARGIN]
    figures["greedy_gate"] = f"no divergence where torch's margin >= {DECISIVE_MARGIN}"
    if decisive:
        raise VerificationError(
            f"{label}: greedy generation left the torch model's at a decisive token "
            f"(margin {max(decisive):.2f}); {figures['greedy_equal']} of "
            f"{figures['greedy_prompts']} replies equal",
            hint=hint,
        )


def tokenizer_figures(
    folder: Path, tokenizer: Any, texts: Sequence[str], replies: Sequence[list[int]]
) -> dict[str, Any]:
    """The tokenizer IRs against the HF tokenizer: the same ids for ``texts`` (special
    tokens added as the HF tokenizer adds them), the same text for ``replies`` (special
    tokens skipped), and the chat template carried over."""
    import numpy as np
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  (registers the tokenizer operations)

    core = ov.Core()
    encode = core.compile_model(str(folder / TOKENIZER_XML), "CPU")
    decode = core.compile_model(str(folder / DETOKENIZER_XML), "CPU")
    same_ids = sum(
        list(np.asarray(encode([text])["input_ids"])[0]) == list(tokenizer(text)["input_ids"])
        for text in texts
    )
    same_text = sum(
        str(decode(np.asarray([ids], dtype=np.int64))["string_output"][0])
        == tokenizer.decode(ids, skip_special_tokens=True)
        for ids in replies
    )
    rt_info = core.read_model(str(folder / TOKENIZER_XML)).get_rt_info()
    template = str(rt_info["chat_template"].value) if "chat_template" in rt_info else None
    wanted = getattr(tokenizer, "chat_template", None)
    return {
        "tokenizer_agreement": same_ids / len(texts) if texts else 1.0,
        "detokenizer_agreement": same_text / len(replies) if replies else 1.0,
        "chat_template": "none" if not wanted else "kept" if template == wanted else "missing",
    }


def require_tokenizer(figures: dict[str, Any], hint: str) -> None:
    """Refuse tokenizer IRs that tokenise or decode differently from the HF tokenizer, or
    that lost the chat template the HF tokenizer has."""
    bad = [k for k in ("tokenizer_agreement", "detokenizer_agreement") if figures[k] < 1.0]
    if figures["chat_template"] == "missing":
        raise VerificationError(
            "the OpenVINO tokenizer IR lost the chat template (rt_info chat_template)",
            hint=hint,
        )
    if bad:
        raise VerificationError(
            "the OpenVINO tokenizer differs from the Hugging Face tokenizer: "
            + ", ".join(f"{k} {figures[k]:.3f}" for k in bad),
            hint=hint,
        )
