"""The inference-runtime contract: what runs a model for generation on a device.

A runtime (``transformers``, ``llama.cpp``, ``openvino`` or a plugin's own) loads a
resolved model under a Plan on the planned Device and returns a :class:`Generator`. The
server, ``hwkit chat``, evaluation samples and RAG all generate through one; none of
them picks a device or a dtype: the plan does (see ``hwkit.jobs.load_generator``).

Phases, and what each owns:

* ``accepts(model)``: whether this runtime can load the model's format (an HF directory,
  a GGUF file, an OpenVINO IR). Cheap: no weights are read.
* ``load(model, plan, device)``: read the weights in the plan's dtype and quantisation
  onto ``device``; everything it holds is released by ``Generator.close``.
* ``Generator.prompt(messages, max_new_tokens)``: render the chat template, count tokens,
  refuse a prompt that does not fit the context (UsageError).
* ``Generator.stream(prompt, params)``: yield text pieces; when the iterator ends,
  ``StreamResult`` holds the completion's token count and finish reason. Closing the
  iterator before its end (``close()``, or dropping it) abandons the request: the runtime
  stops decoding it. Streams may be consumed from several threads at once; a runtime whose
  ``Generator.batch`` is above 1 decodes up to that many concurrent streams together (each
  still its own iterator and result), one with ``batch`` 1 runs them one at a time.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.models import ModelFormat, ResolvedModel
    from hwkit.plan import Plan

Message = dict[str, str]
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one request: greedy unless ``temperature`` is set.

    ``logprobs``: record each new token's log-probability in ``StreamResult.logprobs``
    (adaptive retrieval reads how sure the model is). A runtime that cannot give them
    leaves it None (``Generator.gives_logprobs`` says which).

    ``seed``: seeds the sampler for this request alone: the same seed, prompt and settings
    give the same sample on the same runtime and device (None: unseeded); greedy decoding
    ignores it."""

    max_new_tokens: int = 128
    temperature: float | None = None
    top_p: float | None = None
    logprobs: bool = False
    seed: int | None = None


@dataclass
class Prompt:
    """A rendered prompt: the runtime's own token ids, and how many there are."""

    ids: Any
    prompt_tokens: int
    max_new_tokens: int


@dataclass
class StreamResult:
    """Filled while streaming: complete once the stream's iterator has ended."""

    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"
    error: BaseException | None = None
    logprobs: list[float] | None = None  # per new token, when asked and given


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason


class Generator(ABC):
    """A loaded model that turns chat messages into text, on one device.

    ``lock`` serialises requests on models that run one sequence at a time; a runtime that
    batches concurrent sequences holds it while a batch decodes (so whoever takes it, such
    as a server closing the model, waits for the running batch). ``batch`` is how many
    sequences it decodes together: 1 unless the runtime batches concurrent ``stream`` calls.
    """

    name: str  # the model's label
    plan: Plan
    device: Device
    lock: threading.Lock
    batch: int = 1
    gives_logprobs: bool = False  # fills StreamResult.logprobs when params.logprobs

    @abstractmethod
    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> Prompt: ...

    @abstractmethod
    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        """Text pieces as they are decoded; ``result`` is complete once the iterator ends.
        Closing the iterator early abandons the request (its decoding stops)."""

    def generate(self, prompt: Prompt, params: GenerationParams) -> Completion:
        """The whole reply at once (through ``stream``)."""
        result = StreamResult()
        text = "".join(self.stream(prompt, params, result))
        return Completion(
            text, prompt.prompt_tokens, result.completion_tokens, result.finish_reason
        )

    def close(self) -> None:  # noqa: B027 - runtimes without native handles have nothing to free
        """Release the weights and any native handles."""


Emit = Callable[[str], None]


def check_context(prompt_tokens: int, max_new_tokens: int, context: tuple[int, str]) -> None:
    """Refuse a prompt whose tokens plus the reply's would not fit ``context`` (tokens, and
    whose limit it is: the model's or the plan's), with the same words in every runtime."""
    limit, whose = context
    if prompt_tokens + max_new_tokens > limit:
        from hwkit.errors import UsageError

        raise UsageError(
            f"prompt of {prompt_tokens} tokens plus max_tokens {max_new_tokens} exceeds the "
            f"{whose} context of {limit}",
            hint="send fewer messages or lower max_tokens",
        )


def stream_from_worker(
    work: Callable[[Emit, threading.Event], None],
    result: StreamResult,
    *,
    name: str = "hwkit-generate",
) -> Iterator[str]:
    """Run ``work(emit, stop)`` on a thread and yield each piece it emits, as it comes.

    For runtimes whose library generates in one blocking call with a callback or a chunk
    iterator. ``work`` fills ``result`` and checks ``stop``, which is set when the consumer
    closes this iterator early (the request is abandoned: stop at the next token). An
    exception in ``work`` is re-raised to the consumer, never lost in the thread.
    """
    pieces: queue.Queue[str | None] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            work(pieces.put, stop)
        except BaseException as exc:  # reported to the consumer
            result.error = exc
        finally:
            pieces.put(None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (piece := pieces.get(timeout=600)) is not None:
            yield piece
    finally:
        stop.set()
        thread.join()
    if result.error is not None:
        raise result.error


class InferenceRuntime(ABC):
    """Loads models of some formats and generates with them on a planned device."""

    name: ClassVar[str]
    formats: ClassVar[tuple[ModelFormat, ...]]

    def accepts(self, model: ResolvedModel) -> bool:
        return model.format in self.formats

    @abstractmethod
    def load(self, model: ResolvedModel, plan: Plan, device: Device) -> Generator:
        """The model in the plan's dtype on ``device``; raises UnavailableError when the
        library it needs is missing (with the extra to install)."""
