"""The ``transformers`` inference runtime: a Hugging Face causal LM on a torch device.

It loads the model as the plan says (dtype, attention implementation, bitsandbytes
quantisation) onto the planned device, merges a LoRA run's adapter into its base, renders
prompts with the model's chat template and generates greedily unless a temperature is
given, streaming through ``TextIteratorStreamer`` on a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.inference import (
    FinishReason,
    GenerationParams,
    Generator,
    InferenceRuntime,
    Message,
    Prompt,
    StreamResult,
)
from hwkit.log import get_logger

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device
    from hwkit.models import ModelFormat, ResolvedModel
    from hwkit.plan import Plan

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


def _finish(new_tokens: int, max_new: int, last: int | None, eos: Any) -> FinishReason:
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    return "length" if new_tokens >= max_new and last not in eos_ids else "stop"


class TransformersGenerator(Generator):
    """A causal LM and its tokenizer on one torch device; one generation at a time."""

    def __init__(self, name: str, model: Any, tokenizer: Any, plan: Plan, device: Device) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.plan = plan
        self.device = device
        self.lock = threading.Lock()

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
        ctx, whose = self.context
        if n + max_new_tokens > ctx:
            raise UsageError(
                f"prompt of {n} tokens plus max_tokens {max_new_tokens} exceeds the "
                f"{whose} context of {ctx}",
                hint="send fewer messages or lower max_tokens",
            )
        return Prompt(ids, n, max_new_tokens)

    def _gen_kwargs(self, prompt: Prompt, params: GenerationParams) -> dict[str, Any]:
        import torch

        tok = self.tokenizer
        target = self.device.torch_device()
        ids = prompt.ids.to(target)
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": prompt.max_new_tokens,
            "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        }
        if params.temperature:
            kwargs.update(
                do_sample=True,
                temperature=float(params.temperature),
                top_p=float(params.top_p or 1.0),
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; ``result`` is complete when this ends."""
        import torch
        from transformers import TextIteratorStreamer

        result = result if result is not None else StreamResult()
        streamer = TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        kwargs = self._gen_kwargs(prompt, params)
        eos = self.model.generation_config.eos_token_id

        def work() -> None:
            try:
                with self.lock, torch.inference_mode():
                    out = self.model.generate(**kwargs, streamer=streamer)
                new = out[0, prompt.prompt_tokens :]
                result.completion_tokens = len(new)
                last = int(new[-1]) if len(new) else None
                result.finish_reason = _finish(len(new), prompt.max_new_tokens, last, eos)
            except BaseException as exc:  # reported to the consumer, never lost in the thread
                result.error = exc
                streamer.end()

        thread = threading.Thread(target=work, name="hwkit-generate", daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if result.error is not None:
            raise result.error

    def close(self) -> None:
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
            attention=plan.attention,
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
