"""Dynamic batching: concurrent ``stream`` calls on one model decoded together.

A :class:`Batcher` owns one scheduler thread per generator. Each ``stream`` call becomes a
:class:`Request` with its own unbounded queue of text pieces (decoding never waits for a
consumer). The thread takes the oldest waiting request and, in arrival order, up to
``size - 1`` more that share its sampling settings (greedy, or one temperature and top_p;
a seeded sampled request decodes alone, see :func:`sampling_key`) and fit the context
together (longest prompt + largest ``max_new_tokens`` within the planned context, the
shape of the padded batch). When that batch is not full it waits for more while they
keep coming: until ``gather_s`` passes without an arrival, and at most ``gather_max_s``
after the oldest one (a request alone waits ``gather_s``; requests that
queued while a batch decoded start at once). It then holds the generator's ``lock``
and hands the batch to the runtime's ``run``. Requests arriving while a batch decodes join
the next one, which starts as soon as the running one ends.

For the ``transformers`` runtime, ``run`` is one ``model.generate`` over the left-padded
batch (attention mask zero on the padding; generate derives each row's position ids from
the mask), with :class:`BatchStreamer` routing each step's token of each row to its
request through that row's own ``TextStreamer`` (TextIteratorStreamer's incremental
detokenisation), and :class:`RowStops` stopping each row at its own ``max_new_tokens`` or
when its consumer went away (the built-in end-of-sequence criterion stops it at EOS).

This module imports torch and transformers: the transformers runtime imports it when it
loads a model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessor, StoppingCriteria, TextStreamer
from transformers.generation.streamers import BaseStreamer

from hwkit.errors import UsageError
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.inference import FinishReason, GenerationParams, Prompt, StreamResult

log = get_logger(__name__)

_END = object()


@dataclass(eq=False)
class Request:
    """One ``stream`` call: what to decode, where its text goes, and whether anyone still
    reads it (``cancelled`` is set by the consumer, read by the decoding thread)."""

    prompt: Prompt
    params: GenerationParams
    result: StreamResult
    key: Hashable
    arrived: float = field(default_factory=time.monotonic)
    pieces: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False
    done: bool = False

    def put(self, text: str) -> None:
        if text and not self.cancelled:
            self.pieces.put(text)

    def finish(self, tokens: int, reason: FinishReason) -> None:
        if self.done:
            return
        self.result.completion_tokens = tokens
        self.result.finish_reason = reason
        self.done = True
        self.pieces.put(_END)

    def fail(self, exc: BaseException) -> None:
        if self.done:
            return
        self.result.error = exc
        self.done = True
        self.pieces.put(exc)


def sampling_key(params: GenerationParams) -> Hashable:
    """Requests batch together only with the same sampling settings (None: greedy).

    A seeded sampled request gets a key of its own, so it decodes alone: torch's sampler
    draws every row of a batch from one generator, so a row's sample would depend on what
    it was batched with. Greedy requests ignore the seed and batch as before."""
    if not params.temperature:
        return None
    key = (float(params.temperature), float(params.top_p or 1.0))
    if params.seed is not None:
        return (*key, params.seed, object())  # equal to no other request's key
    return key


@dataclass(frozen=True)
class BatchRecord:
    """One decoded batch: its rows and decoding steps (tests and benches read these)."""

    rows: int
    steps: int
    seconds: float


class Batcher:
    """The scheduler of one generator: a thread that decodes waiting requests in batches.

    ``run(requests)`` decodes one batch and returns its decoding steps; it must finish or
    fail every request it is given (any left over are failed here). ``lock`` is held while
    ``run`` runs. The thread starts with the first request and ends at :meth:`close`.
    """

    def __init__(
        self,
        run: Callable[[list[Request]], int],
        *,
        size: int,
        context: int,
        lock: threading.Lock,
        name: str,
        gather_s: float = 0.01,
        gather_max_s: float = 0.1,
    ) -> None:
        self.run = run
        self.size = max(1, size)
        self.context = context
        self.lock = lock
        self.name = name
        self.gather_s = gather_s
        self.gather_max_s = gather_max_s
        self.records: deque[BatchRecord] = deque(maxlen=256)
        self._cond = threading.Condition()
        self._waiting: list[Request] = []
        self._running: list[Request] = []
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- the consumer's side ---------------------------------------------------------------
    def stream(self, request: Request) -> Iterator[str]:
        """Queue ``request`` and yield its pieces; closing this early cancels it."""
        self.submit(request)
        try:
            while True:
                item = request.pieces.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not request.done:
                self.cancel(request)

    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closing:
                raise UsageError(f"model {self.name!r} is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"hwkit-batch-{self.name}", daemon=True
                )
                self._thread.start()
            self._waiting.append(request)
            self._cond.notify_all()

    def cancel(self, request: Request) -> None:
        """Its consumer went away: a waiting request leaves the queue, a decoding row stops
        at the next step."""
        request.cancelled = True
        with self._cond:
            if request in self._waiting:
                self._waiting.remove(request)
                request.finish(0, "stop")

    def pending(self) -> tuple[int, int]:
        """(requests waiting, rows decoding)."""
        with self._cond:
            return len(self._waiting), len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing waits or decodes (the last batch recorded); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._waiting and not self._running, timeout)

    def close(self) -> None:
        """Fail the waiting requests, stop the running rows, and end the thread."""
        with self._cond:
            self._closing = True
            waiting, self._waiting = self._waiting, []
            for request in self._running:
                request.cancelled = True
            self._cond.notify_all()
            thread = self._thread
        for request in waiting:
            request.fail(UsageError(f"model {self.name!r} was closed before this request ran"))
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the scheduler thread --------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            # The closer of a model may hold the lock while it waits for this thread.
            while not self.lock.acquire(timeout=0.05):
                if self._closing:
                    for request in batch:
                        request.fail(UsageError(f"model {self.name!r} was closed"))
                    with self._cond:
                        self._running = []
                        self._cond.notify_all()
                    return
            try:
                self._decode(batch)
            finally:
                self.lock.release()
                with self._cond:
                    self._running = []
                    self._cond.notify_all()

    def _next_batch(self) -> list[Request] | None:
        """Wait for work; the next batch, taken off the waiting list (None: closing)."""
        with self._cond:
            while True:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return None
                batch = self._pick()
                latest = max(r.arrived for r in self._waiting)
                until = min(latest + self.gather_s, self._waiting[0].arrived + self.gather_max_s)
                wait = until - time.monotonic()
                if len(batch) >= self.size or wait <= 0:
                    break
                self._cond.wait(wait)  # a request arriving now joins this batch
            for request in batch:
                self._waiting.remove(request)
            self._running = list(batch)
            return batch

    def _pick(self) -> list[Request]:
        first = self._waiting[0]
        batch = [first]
        longest, most = first.prompt.prompt_tokens, first.prompt.max_new_tokens
        for request in self._waiting[1:]:
            if len(batch) >= self.size:
                break
            if request.key != first.key:
                continue
            p = max(longest, request.prompt.prompt_tokens)
            n = max(most, request.prompt.max_new_tokens)
            if p + n > self.context:
                continue
            batch.append(request)
            longest, most = p, n
        return batch

    def _decode(self, batch: list[Request]) -> None:
        start = time.perf_counter()
        steps = 0
        try:
            steps = self.run(batch)
        except BaseException as exc:  # reported to each consumer, never lost in the thread
            for request in batch:
                request.fail(exc)
            log.warning("runtime.batch_failed", model=self.name, rows=len(batch), error=str(exc))
        finally:
            for request in batch:  # a runtime that forgot a row must not hang its consumer
                request.fail(RuntimeError(f"model {self.name!r}: the batch ended without it"))
            record = BatchRecord(len(batch), steps, time.perf_counter() - start)
            self.records.append(record)
            log.debug(
                "runtime.batch",
                model=self.name,
                rows=record.rows,
                steps=record.steps,
                seconds=round(record.seconds, 3),
            )


# -- the transformers side -------------------------------------------------------------------
class _RowText(TextStreamer):
    """TextIteratorStreamer's incremental detokenisation for one row, into its request."""

    def __init__(self, tokenizer: Any, request: Request) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.request = request

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.request.put(text)


@dataclass(eq=False)
class _Row:
    request: Request
    text: _RowText
    tokens: int = 0
    closed: bool = False


class BatchStreamer(BaseStreamer):
    """Routes each step's token of each row to that row's request; a row closes at its end
    of sequence, its ``max_new_tokens``, or when its consumer has gone away."""

    def __init__(self, tokenizer: Any, requests: list[Request], eos: Any) -> None:
        self.rows = [_Row(r, _RowText(tokenizer, r)) for r in requests]
        self.eos = set(eos if isinstance(eos, list) else [eos])
        self.prompt_seen = False
        self.steps = 0
        self.scores = StepLogprobs() if any(r.params.logprobs for r in requests) else None
        for r in requests:
            if r.params.logprobs:
                r.result.logprobs = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate hands over the (padded) prompt first
            self.prompt_seen = True
            return
        self.steps += 1
        for i, (row, token) in enumerate(zip(self.rows, value.tolist(), strict=True)):
            if row.closed:
                continue
            if row.request.cancelled:
                self._close(row, "stop")
                continue
            row.tokens += 1
            if self.scores is not None and row.request.result.logprobs is not None:
                row.request.result.logprobs.append(self.scores.of(i, token))
            row.text.put(value[i : i + 1])
            if token in self.eos:
                self._close(row, "stop")
            elif row.tokens >= row.request.prompt.max_new_tokens:
                self._close(row, "length")

    def end(self) -> None:
        for row in self.rows:
            if not row.closed:
                self._close(row, "stop")

    def _close(self, row: _Row, reason: FinishReason) -> None:
        row.closed = True
        row.text.end()  # flushes text held back for a word or a character to complete
        row.request.finish(row.tokens, reason)


class StepLogprobs(LogitsProcessor):
    """Keeps the last step's log-softmax (it runs just before the step's token is chosen,
    so the streamer can read the chosen token's log-probability); scores pass unchanged."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def of(self, row: int, token: int) -> float:
        return float(self.last[row, token]) if self.last is not None else float("nan")


class RowStops(StoppingCriteria):
    """Per row: stop at its own ``max_new_tokens`` or once its consumer has gone away."""

    def __init__(self, requests: list[Request], prompt_width: int) -> None:
        self.requests = requests
        self.width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        new = int(input_ids.shape[1]) - self.width
        done = [r.cancelled or new >= r.prompt.max_new_tokens for r in self.requests]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@contextmanager
def seeded(seed: int | None, device: torch.device | None) -> Iterator[None]:
    """Inside: torch's generators seeded with ``seed`` (None: left as they are). Their
    previous state (the CPU's and ``device``'s) comes back on leaving, so a seeded request
    leaves later unseeded ones as random as before. torch's generators are process-wide:
    sampling elsewhere in the process meanwhile (up to the end of the batch, which may be
    just after the request's consumer has its reply) draws from the seeded state too."""
    if seed is None:
        yield
        return
    accelerator = device is not None and device.type != "cpu"
    devices = [device.index or 0] if accelerator and device is not None else []
    kind = device.type if accelerator and device is not None else "cuda"
    with torch.random.fork_rng(devices=devices, device_type=kind):
        torch.manual_seed(seed % 2**64)  # the range torch takes
        yield


def left_pad(requests: list[Request], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts right-aligned in one (rows, longest) tensor, and its attention mask."""
    width = max(r.prompt.prompt_tokens for r in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width), dtype=torch.long)
    for i, r in enumerate(requests):
        n = r.prompt.prompt_tokens
        ids[i, width - n :] = r.prompt.ids.reshape(-1)[:n]
        mask[i, width - n :] = 1
    return ids, mask
