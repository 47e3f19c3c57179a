"""The models a server holds: each loaded on first use through its ``generate`` plan, placed
where it fits next to the others, the least recently used unloaded when nothing fits.

Every model loads with :func:`hwkit.jobs.load_generator`, which plans it (device, dtype,
runtime) and loads it with the runtime the plan names. The pool keeps, per device, the bytes
the loaded models' plans take (``plan.estimate.total``) and passes them as ``reserved``, so
the allocator places the next model where there is room. An optional ``budget`` caps the
planned bytes of the models loaded on each device (``--memory-budget``): a model that would
take a device over it evicts that device's least recently used model first.

A ``registry:MODEL`` source serves that model's champion in the local model registry and
follows it when it changes (:mod:`hwkit.plugins.serving.champion`, :meth:`ModelPool.swap`).
"""

from __future__ import annotations

import contextlib
import functools
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


class _Replan(Exception):
    """Other models loaded or left while a swap planned: plan it again."""


@dataclass
class Loaded:
    """A loaded model and the requests using it (it is closed once evicted and unused)."""

    name: str
    generator: Generator
    users: int = 0
    evicted: bool = False
    loaded_at: float = field(default_factory=time.time)
    version: int | None = None  # the registry version, for a ``registry:MODEL`` source

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
        watch: bool = True,
    ) -> None:
        from hwkit.plugins.serving.champion import ChampionWatcher, registry_sources

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
        # registry models: the (artifact, version) each serves, once loaded or switched to
        self._served: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, int] = {}  # device -> planned bytes of a swap still loading
        registry = registry_sources(self.sources)
        self.watcher = ChampionWatcher(self, registry) if registry else None
        if self.watcher is not None and watch:
            self.watcher.start()

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
        per_device = {device: need for device, need in self._pending.items() if need}
        for m in self._loaded.values():
            per_device[m.plan.device] = per_device.get(m.plan.device, 0) + m.bytes
        return per_device

    def placements(self) -> dict[str, dict[str, Any]]:
        """Where each loaded model is and why (``/health``)."""
        with self._lock:
            placed = {name: _placement(m) for name, m in self._loaded.items()}
        if self.watcher is not None:
            for name, placement in placed.items():
                if name in self.watcher.sources:
                    placement.update(self.watcher.status(name))
        return placed

    def served_version(self, name: str) -> int | None:
        """The registry version ``name`` serves (None before its first load)."""
        with self._lock:
            served = self._served.get(name)
            return None if served is None else served[1]

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

    def swap(self, name: str, source: str, version: int) -> None:
        """Serve ``version`` of registry model ``name`` from ``source``; on an error nothing
        changes and the version served before keeps serving.

        Planned and loaded like any model (the budget applies, least recently used others
        are unloaded when no device has room) but outside the pool's lock, which a load
        would hold for seconds: meanwhile the old version serves. Room is made as if the
        old version were gone, since the new one replaces it; the old version leaves the
        pool when the new one enters, and is closed when its last lease is released (like
        an evicted model still in use, it is in memory beside the new one until then).
        """
        from hwkit.jobs import load_generator

        while True:
            with self._lock:
                entry = self._loaded.get(name)
                if entry is not None and entry.version == version:
                    return
                reserved = self._reserved()
            claimed: list[tuple[str, int]] = []
            start = time.perf_counter()
            try:
                generator = load_generator(
                    source,
                    runtime=self.runtime,
                    reserved=reserved,
                    dtype=self.dtype,
                    sequences=self.sequences,
                    context=self.context,
                    runtimes=self.runtimes,
                    before_load=functools.partial(self._claim, name, reserved, claimed),
                )
            except BaseException as exc:
                with self._lock:
                    self._unclaim(claimed)
                    if isinstance(exc, _Replan):
                        continue
                    others = [n for n in self._loaded if n != name]
                    no_room = isinstance(exc, NoFitError) and not isinstance(exc, OverBudgetError)
                    if no_room and others:  # as a first load does: unload the LRU, plan again
                        self._evict(others[0], f"no device has room for {name!r} v{version}")
                        continue
                raise
            break
        with self._lock:
            self._unclaim(claimed)
            old = self._loaded.pop(name, None)
            self._loaded[name] = Loaded(name, generator, version=version)
            self._served[name] = (source, version)
            log.info(
                "serve.swap",
                model=name,
                version=version,
                previous=None if old is None else old.version,
                old_in_use=0 if old is None else old.users,
                device=generator.plan.device,
                seconds=round(time.perf_counter() - start, 2),
            )
            if old is not None:
                old.evicted = True
                if old.users == 0:
                    self._close(old)
                else:
                    self._evicted.append(old)

    def _claim(
        self, name: str, reserved: dict[str, int], claimed: list[tuple[str, int]], plan: Plan
    ) -> None:
        """A swap's plan, before any weight is read: room on its device, held until the swap
        ends; planned again when other models came or went while it planned."""
        with self._lock:
            if self._reserved() != reserved:
                raise _Replan
            self._make_room(name, plan, replacing=name)
            device, need = plan.device, plan.estimate.total
            self._pending[device] = self._pending.get(device, 0) + need
            claimed.append((device, need))

    def _unclaim(self, claimed: list[tuple[str, int]]) -> None:
        for device, need in claimed:
            self._pending[device] -= need
        claimed.clear()

    def close(self) -> None:
        """Unload every model (server shutdown)."""
        if self.watcher is not None:
            self.watcher.stop()
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
        source, version = self._source(name)
        entry = Loaded(name, self._load(name, source, version), version=version)
        self._loaded[name] = entry
        if version is not None:
            self._served[name] = (source, version)
        return entry

    def _source(self, name: str) -> tuple[str, int | None]:
        """What to load for ``name``: its source, or a registry model's served version (its
        champion when none was served yet) and that version."""
        if self.watcher is None or name not in self.watcher.sources:
            return self.sources[name], None
        if name in self._served:
            return self._served[name]
        version, path = self.watcher.sources[name].champion()
        return str(path), version.version

    def _load(self, name: str, source: str, version: int | None = None) -> Generator:
        """Plan and load ``source`` as ``name``; unload the least recently used model and plan
        again while no device has room for it."""
        from hwkit.jobs import load_generator

        while True:
            start = time.perf_counter()
            try:
                generator = load_generator(
                    source,
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
                **({} if version is None else {"version": version}),
                device=plan.device,
                runtime=plan.runtime,
                dtype=plan.dtype,
                planned_mib=round(plan.estimate.total / MiB),
                seconds=round(time.perf_counter() - start, 2),
            )
            return generator

    def _make_room(self, name: str, plan: Plan, replacing: str | None = None) -> None:
        """Before any weight is read: keep the models on the plan's device under ``budget``
        (with a swap's still loading; ``replacing``, the model a swap replaces, not counted)."""
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
            on_device = [
                n
                for n, m in self._loaded.items()
                if m.plan.device == plan.device and n != replacing
            ]
            used = self._pending.get(plan.device, 0)
            used += sum(self._loaded[n].bytes for n in on_device)
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
        **({} if entry.version is None else {"registry_version": entry.version}),
    }


def check_sources(sources: dict[str, str]) -> None:
    """Fail at start-up, not on first request, when a served model cannot be resolved (a
    ``registry:MODEL`` source: its champion's artifact). A registry model with no champion
    yet is served once one is promoted (a pipeline's first deploy to a running server):
    until then its requests get a one-line error saying so, and the start-up log warns."""
    from hwkit.models import resolve
    from hwkit.plugins.serving.champion import RegistrySource

    for name, source in sources.items():
        registry = RegistrySource.parse(source)
        if registry is None:
            resolve(source)
        elif registry.has_champion():
            resolve(registry.champion()[1])
        else:
            log.warning(
                "serve.no_champion_yet",
                model=name,
                registry=str(registry.root),
                hint=f"hwkit models promote {registry.model} REF (or a pipeline's deploy)",
            )
