"""Serving a model registry's champion: ``hwkit serve -m NAME=registry:MODEL``.

A served source ``registry:MODEL`` (or ``registry:ROOT/MODEL``; ``--registry DIR`` fills
in ROOT) resolves, when the pool loads it, to the champion's artifact in hwkit's local
model registry (``hwkit.plugins.pipeline.registry``): its ``gguf``, else its
``model_dir``, else its ``run``.

A :class:`ChampionWatcher` thread polls each such model's ``registry.json`` (its mtime,
inode and size) every :data:`WATCH_INTERVAL_S` seconds. When the champion is another
version than the one served, the pool loads that version through the same plan and
memory-budget path as any model (:meth:`ModelPool.swap`), then hands it to new requests;
requests already generating on the old version finish on it, and the old generator is
closed when its last lease is released. A version that fails to load is logged once
(``serve.swap_failed``) and shown in ``/health``; the version served before keeps serving.
The watcher also loads the champion once at start, so a server is warm before its first
request and ``/health`` says which version serves.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import HwkitError, NotFoundError
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.plugins.pipeline.registry import ModelRegistry, ModelVersion
    from hwkit.plugins.serving.pool import ModelPool

log = get_logger(__name__)

PREFIX = "registry:"
WATCH_INTERVAL_S = 1.0  # how often registry.json's stat is compared (read only on a change)
SERVED_ROLES = ("gguf", "model_dir", "run")  # the artifact served, first found


@dataclass(frozen=True)
class RegistrySource:
    """``registry:MODEL`` (the default registry root) or ``registry:ROOT/MODEL``."""

    model: str
    root: Path

    @classmethod
    def parse(cls, source: str) -> RegistrySource | None:
        """The registry source ``source`` names, or None when it is not one."""
        if not source.startswith(PREFIX):
            return None
        from hwkit.plugins.pipeline.registry import check_name, default_registry_root

        rest = source[len(PREFIX) :]
        root_text, sep, model = rest.rpartition("/")
        root = Path(root_text or "/").expanduser() if sep else default_registry_root()
        return cls(check_name(model), root.absolute())

    def __str__(self) -> str:
        return f"{PREFIX}{self.root}/{self.model}"

    def registry(self) -> ModelRegistry:
        from hwkit.plugins.pipeline.registry import ModelRegistry

        return ModelRegistry(self.root)

    @property
    def file(self) -> Path:
        from hwkit.plugins.pipeline.registry import REGISTRY_FILE

        return self.root / self.model / REGISTRY_FILE

    def has_champion(self) -> bool:
        """Registered and promoted (a model not registered yet has none either)."""
        registry = self.registry()
        return self.model in registry.names() and registry.champion(self.model) is not None

    def champion(self) -> tuple[ModelVersion, Path]:
        """The champion and the path of its served artifact; NotFoundError without one."""
        registry = self.registry()
        version = registry.champion(self.model)
        if version is None:
            raise NotFoundError(
                f"{self.model} has no champion in the registry {self.root}",
                hint=f"promote a version: hwkit models promote {self.model} REF",
            )
        for role in SERVED_ROLES:
            if role in version.artifacts:
                return version, registry.artifact_path(self.model, version, role)
        raise NotFoundError(
            f"{self.model} v{version.version} has no artifact hwkit serve can load",
            hint=f"it needs one of {', '.join(SERVED_ROLES)}; it has "
            f"{', '.join(sorted(version.artifacts)) or 'none'}",
        )


def with_root(source: str, root: Path) -> str:
    """``registry:MODEL`` as ``registry:ROOT/MODEL`` (``--registry``); others unchanged."""
    parsed = RegistrySource.parse(source)
    if parsed is None or source[len(PREFIX) :].count("/"):
        return source
    return str(RegistrySource(parsed.model, Path(root).expanduser().absolute()))


def registry_sources(sources: dict[str, str]) -> dict[str, RegistrySource]:
    """Served name -> registry source, for the sources that are ``registry:...``."""
    out: dict[str, RegistrySource] = {}
    for name, source in sources.items():
        parsed = RegistrySource.parse(source)
        if parsed is not None:
            out[name] = parsed
    return out


class ChampionWatcher:
    """One daemon thread that keeps the pool's registry models on their champion.

    ``poll`` may also be called directly (tests); it is serialised with the thread's.
    """

    def __init__(self, pool: ModelPool, sources: dict[str, RegistrySource]) -> None:
        self.pool = pool
        self.sources = dict(sources)
        self.errors: dict[str, str] = {}  # served name -> the last failed switch, one line
        self._seen: dict[str, int] = {}  # served name -> the champion last acted on
        self._stamps: dict[str, tuple[int, int, int] | None] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hwkit-champion", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def status(self, name: str) -> dict[str, Any]:
        """``/health`` fields of a served registry model (beside ``registry_version``)."""
        source = self.sources[name]
        return {
            "registry": str(source.root),
            "registry_champion": self._seen.get(name),
            "registry_error": self.errors.get(name),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(WATCH_INTERVAL_S)

    def poll(self) -> None:
        """Switch every registry model whose champion changed since the last poll."""
        with self._poll_lock:
            for name, source in self.sources.items():
                if self._stop.is_set():
                    return
                stamp = _stamp(source.file)
                if name in self._stamps and stamp == self._stamps[name]:
                    continue
                self._stamps[name] = stamp
                self._check(name, source)

    def _check(self, name: str, source: RegistrySource) -> None:
        try:
            version, path = source.champion()
        except HwkitError as exc:
            self._failed(name, None, exc.one_line())
            return
        if self._seen.get(name) == version.version:
            return
        self._seen[name] = version.version
        if self.pool.served_version(name) == version.version:
            self.errors.pop(name, None)  # e.g. rolled back to the version still serving
            return
        try:
            self.pool.swap(name, str(path), version.version)
        except Exception as exc:  # any load failure: the served version stays
            line = exc.one_line() if isinstance(exc, HwkitError) else f"{type(exc).__name__}: {exc}"
            self._failed(name, version.version, " ".join(line.split()))
            return
        self.errors.pop(name, None)

    def _failed(self, name: str, version: int | None, line: str) -> None:
        served = self.pool.served_version(name)
        what = f"v{version}" if version is not None else "the champion"
        self.errors[name] = f"{what}: {line}"
        log.error(
            "serve.swap_failed",
            model=name,
            version=version,
            serving=served,
            error=line,
        )


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when ``registry.json`` is rewritten (atomically: a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size
