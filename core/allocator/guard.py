"""MemoryGuard: keeps a planned run alive under memory pressure and out-of-memory errors.

It never changes the effective batch. It cuts each planned micro-batch into ``split``
chunks and scales each chunk's loss by its share of rows, so the summed gradient is the
unsplit one; halving the micro-batch doubles the accumulation. On an out-of-memory error
it puts the gradients back as they were, frees cached blocks and retries the same
micro-batch in smaller chunks, so no step is lost.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hwkit.log import get_logger

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device, MemorySnapshot

log = get_logger("hwkit.allocator.guard")

StepFn = Callable[[dict[str, "torch.Tensor"], float], "torch.Tensor"]


@dataclass(frozen=True)
class Decision:
    """One change the guard made, as logged."""

    time: float
    reason: str  # "pressure" or "oom"
    old_micro_batch: int
    new_micro_batch: int
    old_grad_accum: int
    new_grad_accum: int
    pressure: float | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MemoryGuard:
    """Watches ``device`` and shrinks the micro-batch (raising accumulation) when needed.

    Use ``with guard:`` (or start/stop) around training; call ``at_step_boundary()``
    before each optimizer step's first micro-batch and run each micro-batch through
    ``run_micro_batch``.
    """

    def __init__(
        self,
        device: Device,
        micro_batch: int,
        grad_accum: int,
        pressure_threshold: float = 0.92,
        *,
        interval_s: float = 0.5,
        snapshot_to_host: bool = False,
    ) -> None:
        if micro_batch < 1 or grad_accum < 1:
            raise ValueError("micro_batch and grad_accum must be at least 1")
        if not 0 < pressure_threshold <= 1:
            raise ValueError("pressure_threshold must be in (0, 1]")
        self.device = device
        self.planned_micro_batch = micro_batch
        self.planned_grad_accum = grad_accum
        self.pressure_threshold = pressure_threshold
        self.interval_s = interval_s
        self.snapshot_to_host = snapshot_to_host
        self.split = 1
        self.decisions: list[Decision] = []
        self.samples = 0
        self.last: MemorySnapshot | None = None
        self._window_peak = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- current values -------------------------------------------------------------------
    @property
    def micro_batch(self) -> int:
        return max(1, self.planned_micro_batch // self.split)

    @property
    def grad_accum(self) -> int:
        return self.planned_grad_accum * self.split

    @property
    def effective_batch(self) -> int:
        return self.planned_micro_batch * self.planned_grad_accum

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> MemorySnapshot:
        """Read the device's memory once and remember the window's peak pressure."""
        snap = self.device.memory()
        with self._lock:
            self.last = snap
            self.samples += 1
            self._window_peak = max(self._window_peak, snap.pressure)
        return snap

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception as exc:  # a failing sensor must not kill training
                log.warning("memory sample failed", device=self.device.id, error=str(exc))

    def start(self) -> MemoryGuard:
        if self._thread is None:
            self._stop.clear()
            self.sample()
            self._thread = threading.Thread(
                target=self._run, name="hwkit-memory-guard", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __enter__(self) -> MemoryGuard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions ------------------------------------------------------------------------
    def _shrink(self, reason: str, pressure: float | None, detail: str) -> Decision:
        old_mb, old_accum = self.micro_batch, self.grad_accum
        self.split *= 2
        decision = Decision(
            time=time.time(),
            reason=reason,
            old_micro_batch=old_mb,
            new_micro_batch=self.micro_batch,
            old_grad_accum=old_accum,
            new_grad_accum=self.grad_accum,
            pressure=pressure,
            detail=detail,
        )
        self.decisions.append(decision)
        log.warning(
            "memory guard: halving micro-batch", device=self.device.id, **decision.to_dict()
        )
        return decision

    def at_step_boundary(self) -> bool:
        """Halve the micro-batch if pressure since the last boundary reached the threshold.

        Returns whether it did. The effective batch is unchanged (accumulation doubles).
        """
        snap = self.sample()
        with self._lock:
            pressure = max(self._window_peak, snap.pressure)
            self._window_peak = 0.0  # the next window starts at this boundary
        if pressure < self.pressure_threshold:
            return False
        if self.micro_batch <= 1:
            log.warning(
                "memory guard: under pressure at micro-batch 1; nothing left to shrink",
                device=self.device.id,
                pressure=round(pressure, 4),
            )
            return False
        self.device.empty_cache()
        self._shrink(
            "pressure", pressure, f"pressure {pressure:.3f} >= threshold {self.pressure_threshold}"
        )
        return True

    def run_micro_batch(
        self,
        inputs: Mapping[str, torch.Tensor],
        step_fn: StepFn,
        params: Iterable[torch.Tensor],
    ) -> torch.Tensor:
        """Run ``step_fn(chunk, scale)`` over ``split`` chunks of ``inputs``; the summed loss.

        ``step_fn`` runs forward and backward on the chunk with its loss multiplied by
        ``scale`` (the chunk's share of rows) and returns that scaled loss. On an
        out-of-memory error the gradients of ``params`` are restored, caches freed, the
        split doubled and the micro-batch retried; a single row that does not fit re-raises.
        """
        params = [p for p in params if p.requires_grad]
        rows = _rows(inputs)
        saved = self._snapshot(params)
        while True:
            chunks = _split(inputs, min(self.split, rows), rows)
            oom: str | None = None
            total: torch.Tensor | None = None
            try:
                for chunk, chunk_rows in chunks:
                    loss = step_fn(chunk, chunk_rows / rows).detach()
                    total = loss if total is None else total + loss
            except BaseException as exc:
                if not self.device.is_oom(exc) or min(self.split, rows) >= rows:
                    raise
                oom = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if oom is None:
                assert total is not None
                return total
            # outside the except block, so the traceback's tensors are already released
            total = None
            self._restore(params, saved)
            self.device.empty_cache()
            self._shrink("oom", None, oom)

    # -- gradients ------------------------------------------------------------------------
    def _snapshot(self, params: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """Copies of the gradients before this micro-batch (None where there is none yet)."""
        out: list[torch.Tensor | None] = []
        for p in params:
            if p.grad is None:
                out.append(None)
            elif self.snapshot_to_host:
                out.append(p.grad.detach().cpu().clone())
            else:
                out.append(p.grad.detach().clone())
        return out

    @staticmethod
    def _restore(params: list[torch.Tensor], saved: list[torch.Tensor | None]) -> None:
        for p, grad in zip(params, saved, strict=True):
            if grad is None:
                p.grad = None
            elif p.grad is None:
                p.grad = grad.to(p.device, copy=True)
            else:
                p.grad.copy_(grad)


def _rows(inputs: Mapping[str, torch.Tensor]) -> int:
    for value in inputs.values():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0])
    raise ValueError("inputs hold no batched tensor to split")


def _split(
    inputs: Mapping[str, torch.Tensor], parts: int, rows: int
) -> list[tuple[dict[str, torch.Tensor], int]]:
    """``inputs`` cut into ``parts`` row chunks; values not batched by row are shared."""
    import torch

    if parts <= 1:
        return [(dict(inputs), rows)]
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    chunks = []
    for start, end in itertools.pairwise(bounds):
        if end <= start:
            continue
        chunk = {
            key: value[start:end]
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == rows
            else value
            for key, value in inputs.items()
        }
        chunks.append((chunk, end - start))
    return chunks
