"""The ``llama.cpp`` inference runtime: a GGUF file through llama-cpp-python.

It loads the file with a context of the plan's sequence length, on the CPU's physical
cores or with every layer offloaded to the planned CUDA device (when llama-cpp-python was
built with GPU support), renders prompts with the chat template stored in the GGUF and
generates greedily unless a temperature is given (seeded with ``GenerationParams.seed``
when one is), streaming ``create_completion`` on the reader's thread. llama-cpp-python
is imported only when a model is loaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
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
    check_context,
)
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.models import ModelFormat, ResolvedModel
    from hwkit.plan import Plan

log = get_logger(__name__)

RUNTIME = "llama.cpp"
REEXPORT = (
    "serve its Hugging Face directory with the transformers runtime, "
    "or re-export it with hwkit export gguf"
)


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` from a GGUF file's metadata; None where it cannot be read."""
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get("general.architecture")
        return None if field is None else str(field.contents())
    except Exception:  # the caller's error says what failed; this only adds detail
        return None


def physical_cores() -> int:
    """Threads for llama.cpp on a CPU: one per physical core (hyperthreads slow it down),
    no more than the cores this process may run on (CPU affinity, a container's cpuset)."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores)


def placement(llama_cpp: Any, model: ResolvedModel, device: Device) -> dict[str, Any]:
    """``Llama`` keyword arguments that put the model on ``device``; a one-line UsageError
    where this llama-cpp-python build cannot run there."""
    if device.kind == "cpu":
        cores = physical_cores()
        return {"n_gpu_layers": 0, "n_threads": cores, "n_threads_batch": cores}
    if device.kind == "cuda":
        if not llama_cpp.llama_supports_gpu_offload():
            raise UsageError(
                f"{model.given}: llama-cpp-python here is built without GPU offload, "
                f"so the llama.cpp runtime cannot run it on {device.id} ({device.name})",
                hint="install a CUDA build of llama-cpp-python, or run it on the CPU "
                "(--device cpu:0)",
            )
        return {
            "n_gpu_layers": -1,  # every layer
            "split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE,  # on the planned GPU only
            "main_gpu": device.index,
        }
    runs = ", ".join(device.capabilities.runtimes) or "none"
    raise UsageError(
        f"{model.given}: the llama.cpp runtime cannot run on {device.id} ({device.name})",
        hint=f"{device.id} runs: {runs}",
    )


class LlamaCppGenerator(Generator):
    """A ``llama_cpp.Llama`` and its chat template; one generation at a time."""

    def __init__(self, name: str, llm: Any, plan: Plan, device: Device) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = name
        self.llm = llm
        self.plan = plan
        self.device = device
        self.lock = threading.Lock()
        metadata: dict[str, str] = llm.metadata
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(
                f"{llm.model_path}: the GGUF has no chat template (tokenizer.chat_template)",
                hint="re-export it with hwkit export gguf from a model with a chat template",
            )
        self.bos = int(llm.token_bos())
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.add_bos = self.bos >= 0 and bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(int(llm.token_eos())),
            bos_token=self._token_text(self.bos),
            add_generation_prompt=True,
        )
        arch = metadata.get("general.architecture", "")
        trained = metadata.get(f"{arch}.context_length")
        self.trained_context = int(trained) if trained and trained.isdigit() else None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: bytes = self.llm.detokenize([token], special=True)
        return text.decode("utf-8", errors="replace")

    @property
    def context(self) -> tuple[int, str]:
        """Tokens a sequence may hold, and whose limit that is: the plan's (the context
        llama.cpp was given), or the model's when it was trained for fewer."""
        limit = self.trained_context
        if limit is not None and limit < self.plan.max_seq_len:
            return limit, "model's"
        return self.plan.max_seq_len, "planned"

    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> Prompt:
        """Render ``messages`` with the GGUF's chat template; refuse prompts over the context."""
        if self.llm is None:
            raise UsageError(f"{self.name} is closed", hint="load the model again")
        try:
            text = self.formatter(messages=[dict(m) for m in messages]).prompt
        except Exception as exc:  # the template's raise_exception, or a jinja2 error
            raise UsageError(
                f"{self.name}: the chat template refused the messages: {exc}"
            ) from None
        ids: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self.add_bos and ids[:1] != [self.bos]:  # unless the template wrote it
            ids = [self.bos, *ids]
        n = len(ids)
        check_context(n, max_new_tokens, self.context)
        return Prompt(ids, n, max_new_tokens)

    def _completion_kwargs(self, prompt: Prompt, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "prompt": list(prompt.ids),
            "max_tokens": prompt.max_new_tokens,
            "stream": True,
            "temperature": 0.0,  # greedy
        }
        if params.temperature:
            kwargs.update(temperature=float(params.temperature), top_p=float(params.top_p or 1.0))
            if params.seed is not None:  # llama-cpp-python seeds its sampler with it
                kwargs["seed"] = params.seed % 2**32  # llama.cpp's seeds are 32-bit
        return kwargs

    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; ``result`` is complete when this ends.

        llama-cpp-python's own stream decodes on the thread that reads it, so pieces go
        straight to the consumer (no worker thread, no queue: on a 2-core machine every
        hop competes with llama.cpp's compute threads). ``lock`` is taken at the first
        read and released when the iterator ends or is closed; closing it early stops
        the generation at the next token.
        """
        result = result if result is not None else StreamResult()
        if self.llm is None:
            raise UsageError(f"{self.name} is closed", hint="load the model again")
        return self._decode(self._completion_kwargs(prompt, params), prompt, result)

    def _decode(
        self, kwargs: dict[str, Any], prompt: Prompt, result: StreamResult
    ) -> Iterator[str]:
        with self.lock:
            llm = self.llm
            if llm is None:
                raise UsageError(f"{self.name} is closed", hint="load the model again")
            finish: FinishReason = "stop"
            chunks = llm.create_completion(**kwargs)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if choice["finish_reason"] == "length":
                        finish = "length"
                    if choice["text"]:
                        yield choice["text"]
            except Exception as exc:  # recorded as the contract says, then re-raised
                result.error = exc
                raise
            finally:
                chunks.close()
            # llama.cpp evaluates every new token but the last one it stops on
            # for length (an end-of-turn token it samples is not part of the reply)
            evaluated = int(llm.n_tokens) - prompt.prompt_tokens
            result.completion_tokens = evaluated + (1 if finish == "length" else 0)
            result.finish_reason = finish

    def close(self) -> None:
        """Free the model and its context (the caller makes sure no generation runs)."""
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()


class LlamaCppRuntime(InferenceRuntime):
    """GGUF files through llama-cpp-python, on the CPU or a CUDA device."""

    name: ClassVar[str] = RUNTIME
    formats: ClassVar[tuple[ModelFormat, ...]] = ("gguf",)

    def load(self, model: ResolvedModel, plan: Plan, device: Device) -> Generator:
        import time

        from hwkit.extras import require

        llama_cpp = require("llama_cpp", purpose="the llama.cpp runtime")
        if model.format != "gguf":
            raise UsageError(
                f"{model.given}: the llama.cpp runtime loads GGUF files, not {model.format} models",
                hint="export it with hwkit export gguf",
            )
        where = placement(llama_cpp, model, device)
        path = Path(model.path)
        if not path.is_file():
            raise NotFoundError(f"GGUF file {str(path)!r} does not exist")
        start = time.perf_counter()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=plan.max_seq_len,
                n_batch=min(512, plan.max_seq_len),
                verbose=False,
                **where,
            )
        except ValueError as exc:
            if "Failed to load model" not in str(exc):
                raise
            arch = gguf_architecture(path)
            what = (
                f"the architecture {arch!r} (general.architecture)"
                if arch
                else "this GGUF (its general.architecture is unreadable)"
            )
            raise ConfigError(
                f"{path}: llama.cpp cannot load {what}",
                hint=REEXPORT,
            ) from None
        try:
            generator = LlamaCppGenerator(model.label, llm, plan, device)
        except BaseException:
            llm.close()
            raise
        log.info(
            "runtime.load",
            runtime=self.name,
            model=model.label,
            device=device.id,
            gpu_layers=where["n_gpu_layers"],
            seconds=round(time.perf_counter() - start, 2),
        )
        return generator
