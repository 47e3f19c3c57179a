"""The models a server holds: each loaded on first use through its ``generate`` plan, placed
where it fits next to the others, the least recently used unloaded when nothing fits.

Every model loads with :func:`hwkit.jobs.load_generator`, which plans it (device, dtype,
runtime) and loads it with the runtime the plan names. The pool keeps, per device, the bytes
the loaded models' plans take (``plan.estimate.total``) and passes them as ``reserved``, so
the allocator places the next model where there is room. An optional ``budget`` caps the
planned bytes of the models loaded on each device (``--memory-budget``): a model that would
take a device over it evicts that device's least recently used model first.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hwkit.errors import NoFitError, UnknownNameError
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.inference import Generator
    from hwkit.plan import Plan
    from hwkit.runtime import Runtime

log = get_logger(__name__)

MiB = 2**20


class OverBudgetError(NoFitError):
    """The model's plan alone is over the serving budget: unloading others cannot help."""


@dataclass
class Loaded:
    """A loaded model and the requests using it (it is closed once evicted and unused)."""

    name: str
    generator: Generator
    users: int = 0
    evicted: bool = False
    loaded_at: float = field(default_factory=time.time)

    @property
    def plan(self) -> Plan:
        return self.generator.plan

    @property
    def bytes(self) -> int:
        return self.generator.plan.estimate.total


class ModelPool:
    """Served name -> model source; loads lazily through plans, evicts least recently used.

    ``runtime`` is the caller's (the CLI passes the process's, tests a mock one); ``dtype``
    overrides every plan's dtype; ``budget`` caps the loaded models' planned bytes;
    ``sequences`` is how many concurrent sequences each model's plan asks room for (its
    ``micro_batch`` is how many fit, the batch a batching runtime decodes together),
    ``context`` the tokens per sequence (None: ``hwkit.jobs.DEFAULT_CONTEXT``), ``runtimes``
    the user's choice of inference runtimes (empty: every one that loads the model).
    """

    def __init__(
        self,
        sources: dict[str, str],
        runtime: Runtime,
        *,
        budget: int | None = None,
        dtype: str | None = None,
        sequences: int = 1,
        context: int | None = None,
        runtimes: tuple[str, ...] = (),
    ) -> None:
        self.sources = dict(sources)
        self.sequences = sequences
        self.context = context
        self.runtimes = runtimes
        self.runtime = runtime
        self.budget = budget
        self.dtype = dtype
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._evicted: list[Loaded] = []  # unloaded from the pool, still in use
        self._lock = threading.Lock()
        self.evictions: list[str] = []

    # -- what is loaded ---------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.sources)

    def loaded(self) -> list[str]:
        """Loaded model names, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def used_bytes(self) -> int:
        """Planned bytes of the loaded models, all devices together."""
        with self._lock:
            return sum(m.bytes for m in self._loaded.values())

    def reserved(self) -> dict[str, int]:
        """Planned bytes per device id: what the next plan must leave room for."""
        with self._lock:
            return self._reserved()

    def _reserved(self) -> dict[str, int]:
        per_device: dict[str, int] = {}
        for m in self._loaded.values():
            per_device[m.plan.device] = per_device.get(m.plan.device, 0) + m.bytes
        return per_device

    def placements(self) -> dict[str, dict[str, Any]]:
        """Where each loaded model is and why (``/health``)."""
        with self._lock:
            return {name: _placement(m) for name, m in self._loaded.items()}

    # -- using a model ----------------------------------------------------------------------
    def get(self, name: str) -> Generator:
        """The loaded model, loading it (and evicting others) if needed.

        The pool may close it when another model needs the room; a caller that generates
        while others load holds it with :meth:`lease` instead.
        """
        with self._lock:
            return self._entry(name).generator

    def acquire(self, name: str) -> Generator:
        """Like :meth:`get`, and the model stays open until :meth:`release`."""
        with self._lock:
            entry = self._entry(name)
            entry.users += 1
            return entry.generator

    def release(self, generator: Generator) -> None:
        """The end of an :meth:`acquire`; an evicted model is closed by its last user."""
        with self._lock:
            for entry in [*self._loaded.values(), *self._evicted]:
                if entry.generator is generator:
                    entry.users -= 1
                    if entry.evicted and entry.users == 0:
                        self._close(entry)
                    return

    @contextlib.contextmanager
    def lease(self, name: str) -> Iterator[Generator]:
        generator = self.acquire(name)
        try:
            yield generator
        finally:
            self.release(generator)

    def close(self) -> None:
        """Unload every model (server shutdown)."""
        with self._lock:
            while self._loaded:
                self._evict_lru(reason="shutdown")

    # -- loading and evicting (under the lock) -----------------------------------------------
    def _entry(self, name: str) -> Loaded:
        if name not in self.sources:
            raise UnknownNameError("model", name, self.names())
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        entry = Loaded(name, self._load(name))
        self._loaded[name] = entry
        return entry

    def _load(self, name: str) -> Generator:
        """Plan and load ``name``; unload the least recently used model and plan again while
        no device has room for it."""
        from hwkit.jobs import load_generator

        while True:
            start = time.perf_counter()
            try:
                generator = load_generator(
                    self.sources[name],
                    runtime=self.runtime,
                    reserved=self._reserved(),
                    dtype=self.dtype,
                    sequences=self.sequences,
                    context=self.context,
                    runtimes=self.runtimes,
                    before_load=lambda plan: self._make_room(name, plan),
                )
            except OverBudgetError:
                raise
            except NoFitError as exc:
                if self._loaded:
                    self._evict_lru(reason=f"no device has room for {name!r}")
                    continue
                raise NoFitError(
                    f"model {name!r} fits on no device, with no other model loaded: {exc.message}",
                    hint=exc.hint or "serve a smaller model or free device memory",
                ) from exc
            plan = generator.plan
            log.info(
                "serve.load",
                model=name,
                device=plan.device,
                runtime=plan.runtime,
                dtype=plan.dtype,
                planned_mib=round(plan.estimate.total / MiB),
                seconds=round(time.perf_counter() - start, 2),
            )
            return generator

    def _make_room(self, name: str, plan: Plan) -> None:
        """Before any weight is read: keep the models on the plan's device under ``budget``."""
        if self.budget is None:
            return
        need = plan.estimate.total
        if need > self.budget:
            raise OverBudgetError(
                f"model {name!r} needs ~{need / MiB:.0f} MiB as planned on {plan.device}, over "
                f"the serving budget of {self.budget / MiB:.0f} MiB per device",
                hint="raise --memory-budget or serve a smaller dtype",
            )
        while True:
            on_device = [n for n, m in self._loaded.items() if m.plan.device == plan.device]
            used = sum(self._loaded[n].bytes for n in on_device)
            if not on_device or used + need <= self.budget:
                return
            self._evict(on_device[0], reason=f"{plan.device}'s budget has no room for {name!r}")

    def _evict_lru(self, reason: str) -> None:
        self._evict(next(iter(self._loaded)), reason)

    def _evict(self, old_name: str, reason: str) -> None:
        old = self._loaded.pop(old_name)
        old.evicted = True
        self.evictions.append(old_name)
        log.info("serve.evict", model=old_name, freed_mib=round(old.bytes / MiB), reason=reason)
        if old.users == 0:
            self._close(old)
        else:
            self._evicted.append(old)

    def _close(self, entry: Loaded) -> None:
        with entry.generator.lock:  # a generation still running on it finishes first
            entry.generator.close()
        if entry in self._evicted:
            self._evicted.remove(entry)


def _placement(entry: Loaded) -> dict[str, Any]:
    plan = entry.plan
    return {
        "device": plan.device,
        "device_name": plan.device_name,
        "runtime": plan.runtime,
        "dtype": plan.dtype,
        "quantization": plan.quantization,
        "batch": plan.micro_batch,
        "context": plan.max_seq_len,
        "planned_bytes": plan.estimate.total,
        "reasons": {
            key: plan.reasons[key]
            for key in ("device", "runtime", "dtype", "quantization", "micro_batch", "kv_cache")
            if key in plan.reasons
        },
        "loaded_at": entry.loaded_at,
    }


def check_sources(sources: dict[str, str]) -> None:
    """Fail at start-up, not on first request, when a served model cannot be resolved."""
    from hwkit.models import resolve

    for source in sources.values():
        resolve(source)
