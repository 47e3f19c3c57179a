"""Models the chat server holds: loaded on first use, kept under a memory budget, the least
recently used unloaded first.

Weight memory per model comes from the allocator's ``ModelSpec`` (config.json sizes, never
the weights) times the bytes of the serving dtype, plus the adapter file if any.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwkit.errors import NoFitError, UnknownNameError
from hwkit.log import get_logger

log = get_logger(__name__)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class LoadedModel:
    """A model ready to generate: its torch module, tokenizer and a lock (one at a time)."""

    name: str
    model: Any
    tokenizer: Any
    bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded_at: float = field(default_factory=time.time)


def estimate_bytes(source: str, dtype: str = "float32") -> int:
    """Weights in memory for ``source`` (a model name, HF directory or LoRA run directory)."""
    from hwkit.allocator import ModelSpec
    from hwkit.plugins.exporters.source import resolve_source

    src = resolve_source(source)
    spec = ModelSpec.from_config_file(src.base / "config.json")
    total = spec.param_count * DTYPE_BYTES[dtype]
    if src.adapter is not None:
        total += sum(p.stat().st_size for p in src.adapter.glob("adapter_model*.safetensors"))
    return int(total)


class ModelPool:
    """Name -> source mapping; loads lazily, evicts least-recently-used to fit ``budget``."""

    def __init__(self, sources: dict[str, str], budget_bytes: int, dtype: str = "float32") -> None:
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype {dtype!r} not in {sorted(DTYPE_BYTES)}")
        self.sources = dict(sources)
        self.budget = int(budget_bytes)
        self.dtype = dtype
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions: list[str] = []

    def names(self) -> list[str]:
        return list(self.sources)

    def loaded(self) -> list[str]:
        """Loaded model names, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.bytes for m in self._loaded.values())

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it (and evicting others) if needed."""
        if name not in self.sources:
            raise UnknownNameError("model", name, self.names())
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
            need = estimate_bytes(self.sources[name], self.dtype)
            if need > self.budget:
                raise NoFitError(
                    f"model {name!r} needs ~{need / 2**20:.0f} MiB, over the serving budget "
                    f"of {self.budget / 2**20:.0f} MiB",
                    hint="raise --memory-budget or serve a smaller dtype",
                )
            while self._loaded and sum(m.bytes for m in self._loaded.values()) + need > self.budget:
                old_name, old = self._loaded.popitem(last=False)
                with old.lock:  # wait for a generation in flight on it to finish
                    pass
                self.evictions.append(old_name)
                log.info("serve.evict", model=old_name, freed_mib=round(old.bytes / 2**20))
                del old
            loaded = self._load(name, need)
            self._loaded[name] = loaded
            return loaded

    def _load(self, name: str, need: int) -> LoadedModel:
        import gc

        import torch

        from hwkit.plugins.exporters.source import resolve_source

        gc.collect()
        src = resolve_source(self.sources[name])
        start = time.perf_counter()
        model = src.load_model(dtype=getattr(torch, self.dtype))
        tokenizer = src.load_tokenizer()
        log.info(
            "serve.load",
            model=name,
            mib=round(need / 2**20),
            seconds=round(time.perf_counter() - start, 2),
        )
        return LoadedModel(name, model, tokenizer, need)


def parse_size(text: str | int) -> int:
    """``"600MB"``, ``"2GiB"``, ``"1.5G"`` or a byte count to bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    units = {
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "K": 2**10,
        "M": 2**20,
        "G": 2**30,
        "B": 1,
    }
    for unit, mult in units.items():
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(float(s))


def default_budget() -> int:
    """Half of the memory available now: the server shares the machine."""
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


def paths_exist(sources: dict[str, str]) -> None:
    """Fail at start-up, not on first request, when a served path is missing."""
    from hwkit.plugins.exporters.source import resolve_source

    for src in sources.values():
        resolve_source(Path(src) if Path(src).exists() else src)
