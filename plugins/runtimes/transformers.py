"""The ``transformers`` inference runtime: a Hugging Face causal LM on a torch device.

It loads the model as the plan says (dtype, attention implementation, bitsandbytes
quantisation) onto the planned device, merges a LoRA run's adapter into its base, renders
prompts with the model's chat template and generates greedily unless a temperature is
given. Concurrent ``stream`` calls are decoded together, up to the plan's ``micro_batch``
sequences (``load_generator(..., sequences=N)`` asks the planner for N): a scheduler
thread left-pads waiting requests with the same sampling settings into one
``model.generate`` and streams each row to its own consumer
(:mod:`hwkit.plugins.runtimes.batching`). A request alone decodes exactly as it would
unbatched. A seeded sampled request (``GenerationParams.seed``) decodes alone, with
torch's generators seeded just before its ``generate`` and restored after it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.inference import (
    GenerationParams,
    Generator,
    InferenceRuntime,
    Message,
    Prompt,
    StreamResult,
    check_context,
)
from hwkit.log import get_logger

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device
    from hwkit.models import ModelFormat, ResolvedModel
    from hwkit.plan import Plan
    from hwkit.plugins.runtimes.batching import Request

log = get_logger(__name__)


def load_config(model: ResolvedModel) -> dict[str, Any]:
    """The (base) model's ``config.json``, read without loading weights."""
    import json

    path = model.weights_dir / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model config: {exc}") from None
    return config


def load_tokenizer(model: ResolvedModel) -> Any:
    """The model's tokenizer (the run's own when it saved one), with a pad token."""
    from transformers import AutoTokenizer

    from hwkit.models import TOKENIZER_FILES

    folder = model.tokenizer_dir or model.weights_dir
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise NotFoundError(
            f"model directory {str(folder)!r} has no tokenizer ({TOKENIZER_FILES[0]})",
            hint="copy the tokenizer files next to config.json",
        )
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    model: ResolvedModel,
    *,
    dtype: torch.dtype | None = None,
    merge: bool = True,
    attention: str | None = None,
    quantization: str = "none",
    device: Device | None = None,
) -> Any:
    """The torch model in eval mode. With an adapter it is merged into the base unless
    ``merge=False`` (then a PeftModel, the reference a merge is checked against); with a
    device it is placed there (quantised models are loaded straight onto it)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32, "local_files_only": True}
    if attention:
        kwargs["attn_implementation"] = attention
    if quantization in ("nf4", "int8"):
        from transformers import BitsAndBytesConfig

        from hwkit.extras import require

        require("bitsandbytes", purpose=f"{quantization} weights")
        kwargs["quantization_config"] = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=kwargs["dtype"],
                bnb_4bit_use_double_quant=True,
            )
            if quantization == "nf4"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        if device is not None:
            kwargs["device_map"] = {"": str(device.torch_device())}
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(model.weights_dir), **kwargs)
    if model.adapter is not None:
        from peft import PeftModel

        loaded = PeftModel.from_pretrained(loaded, str(model.adapter), is_trainable=False)
        if merge:
            loaded = loaded.merge_and_unload()
    if device is not None and quantization not in ("nf4", "int8"):
        loaded = device.place(loaded)
    return loaded.eval()


def _attention(planned: str | None) -> str | None:
    """The plan's attention implementation; sdpa for flash-attention when the flash-attn
    package is not installed (the plan names what the hardware runs best)."""
    import importlib.util

    if planned == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        log.info("runtime.attention", planned=planned, used="sdpa", reason="no flash-attn package")
        return "sdpa"
    return planned


class TransformersGenerator(Generator):
    """A causal LM and its tokenizer on one torch device; concurrent streams batched.

    ``batch`` (the plan's micro-batch) bounds the rows decoded together; a scheduler thread
    (started by the first request, ended by :meth:`close`) holds ``lock`` while a batch
    decodes.
    """

    gives_logprobs = True

    def __init__(self, name: str, model: Any, tokenizer: Any, plan: Plan, device: Device) -> None:
        from hwkit.plugins.runtimes.batching import Batcher

        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.plan = plan
        self.device = device
        self.lock = threading.Lock()
        self.batch = max(1, plan.micro_batch)
        self.batcher = Batcher(
            self._decode, size=self.batch, context=self.context[0], lock=self.lock, name=name
        )

    @property
    def context(self) -> tuple[int, str]:
        """Tokens a sequence may hold, and whose limit that is: the model's, or the plan's
        when its KV-cache estimate was made for fewer."""
        limit = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        if self.plan.max_seq_len < limit:
            return self.plan.max_seq_len, "planned"
        return limit, "model's"

    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> Prompt:
        """Render ``messages`` with the chat template; refuse prompts over the context."""
        tok = self.tokenizer
        text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        n = int(ids.shape[1])
        check_context(n, max_new_tokens, self.context)
        return Prompt(ids, n, max_new_tokens)

    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; ``result`` is complete when this ends.
        The request joins the next batch; closing the iterator early stops its row."""
        from hwkit.plugins.runtimes.batching import Request, sampling_key

        result = result if result is not None else StreamResult()
        request = Request(prompt, params, result, sampling_key(params))
        yield from self.batcher.stream(request)

    def _decode(self, requests: list[Request]) -> int:
        """One ``generate`` over ``requests`` (same sampling settings), left-padded; each
        row streamed to its request. Returns the decoding steps run."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from hwkit.plugins.runtimes.batching import BatchStreamer, RowStops, left_pad, seeded

        model = self.model
        if model is None:
            raise UsageError(f"model {self.name!r} is closed")
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids, mask = left_pad(requests, pad)
        eos = model.generation_config.eos_token_id
        streamer = BatchStreamer(tok, requests, eos)
        target = self.device.torch_device()
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(target),
            "attention_mask": mask.to(target),
            "max_new_tokens": max(r.prompt.max_new_tokens for r in requests),
            "pad_token_id": pad,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([RowStops(requests, int(ids.shape[1]))]),
        }
        if streamer.scores is not None:
            kwargs["logits_processor"] = LogitsProcessorList([streamer.scores])
        params = requests[0].params
        seed: int | None = None
        if params.temperature:
            kwargs.update(
                do_sample=True,
                temperature=float(params.temperature),
                top_p=float(params.top_p or 1.0),
            )
            seed = params.seed  # a seeded request decodes alone (its own batch key)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # generate takes no torch.Generator: it samples with torch's global one
        with torch.inference_mode(), seeded(seed, target):
            model.generate(**kwargs)
        return streamer.steps

    def close(self) -> None:
        """Stop the scheduler (waiting requests fail, running rows stop), free the weights."""
        self.batcher.close()
        self.model = None
        self.device.empty_cache()


class TransformersRuntime(InferenceRuntime):
    """Hugging Face directories and LoRA runs on any device with a torch device."""

    name: ClassVar[str] = "transformers"
    formats: ClassVar[tuple[ModelFormat, ...]] = ("hf",)

    def load(self, model: ResolvedModel, plan: Plan, device: Device) -> Generator:
        import time

        import torch

        if device.torch_device() is None:
            raise UsageError(
                f"{device.id} has no torch device; the transformers runtime cannot run there",
                hint="export the model for a runtime the device runs (hwkit export openvino)",
            )
        start = time.perf_counter()
        loaded = load_causal_lm(
            model,
            dtype=getattr(torch, plan.dtype),
            attention=_attention(plan.attention),
            quantization=plan.quantization,
            device=device,
        )
        tokenizer = load_tokenizer(model)
        log.info(
            "runtime.load",
            runtime=self.name,
            model=model.label,
            device=device.id,
            dtype=plan.dtype,
            seconds=round(time.perf_counter() - start, 2),
        )
        return TransformersGenerator(model.label, loaded, tokenizer, plan, device)
