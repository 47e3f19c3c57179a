"""A local model registry: numbered versions of a named model, a ``champion`` alias, promote
and rollback, kept as plain files so a person can read them and a second process can share them.

Layout under the root (``$HWKIT_REGISTRY_DIR`` or ``~/.local/share/hwkit/registry``)::

    ROOT/<name>/registry.json   versions, aliases, history (format 1)
    ROOT/<name>/v<N>/           the artifacts of version N, copied in
    ROOT/<name>/.lock           flock'd by every writer

A version's files are copied into a staging folder and renamed to ``v<N>`` in one step, so a
killed copy never leaves half a version; ``registry.json`` is rewritten atomically under an
exclusive lock, so two processes registering at once both keep their version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from hwkit.atomic import write_json_atomic
from hwkit.errors import ConfigError, NotFoundError, UsageError

FORMAT = 1
REGISTRY_ENV = "HWKIT_REGISTRY_DIR"
REGISTRY_FILE = "registry.json"
CHAMPION = "champion"
LATEST = "latest"

# A leading letter or digit keeps ".", "..", ".lock" and staging folders out of the namespace.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION_DIR = re.compile(r"v([0-9]+)")
_REF = re.compile(r"v?([0-9]+)")

Action = Literal["register", "promote", "rollback"]


def default_registry_root() -> Path:
    """``$HWKIT_REGISTRY_DIR``, else ``~/.local/share/hwkit/registry``."""
    root = os.environ.get(REGISTRY_ENV)
    return Path(root).expanduser() if root else Path.home() / ".local/share/hwkit/registry"


def check_name(name: str, what: str = "model name") -> str:
    """A name that is one path component: letters, digits, ``-_.``, starting with neither."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"invalid {what} {name!r}",
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version; ``artifacts`` maps a role (``gguf``, ``modelfile``,
    ``model_dir``, ``run``) to a path relative to the version folder (copied) or absolute
    (registered with ``copy=False``)."""

    version: int
    created: str
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    run: str | None = None
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelVersion:
        return cls(
            version=int(data["version"]),
            created=str(data["created"]),
            artifacts={str(k): str(v) for k, v in (data.get("artifacts") or {}).items()},
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
            run=data.get("run"),
            source=data.get("source"),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One change of the registry: ``previous`` is the champion before a promote or
    rollback (None for a register, or when there was none)."""

    time: str
    action: Action
    version: int
    previous: int | None = None
    reason: str | None = None


class ModelRegistry:
    """Versions of named models under ``root``; every method re-reads the files, so several
    processes (a pipeline, ``hwkit models promote``) can share one registry."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_root()

    # -- reading -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Models that have a registry file, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _NAME.fullmatch(p.name) and (p / REGISTRY_FILE).is_file()
        )

    def versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion.from_dict(v) for v in self._read_existing(name)["versions"]]

    def history(self, name: str) -> list[HistoryEntry]:
        return [HistoryEntry(**h) for h in self._read_existing(name)["history"]]

    def aliases(self, name: str) -> dict[str, int]:
        """Stored aliases (``champion``) plus ``latest``, when the model has versions."""
        doc = self._read_existing(name)
        out = {str(k): int(v) for k, v in doc["aliases"].items()}
        if doc["versions"]:
            out[LATEST] = max(int(v["version"]) for v in doc["versions"])
        return out

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number (``3``, ``"3"``, ``"v3"``) or alias (``champion``, ``latest``)."""
        return self._resolve(name, self._read_existing(name), ref)

    def champion(self, name: str) -> ModelVersion | None:
        doc = self._read_existing(name)
        number = doc["aliases"].get(CHAMPION)
        return None if number is None else self._by_number(name, doc, int(number))

    def previous_champion(self, name: str) -> ModelVersion | None:
        """The version :meth:`rollback` would make champion, or None."""
        doc = self._read_existing(name)
        stack = _champion_stack(doc["history"])
        return self._by_number(name, doc, stack[-2]) if len(stack) >= 2 else None

    def version_dir(self, name: str, version: int) -> Path:
        return self.root / check_name(name) / f"v{version}"

    def artifact_path(self, name: str, version: ModelVersion, role: str) -> Path:
        """Where a version's artifact is on disk (absolute for ``copy=False`` artifacts)."""
        if role not in version.artifacts:
            raise NotFoundError(
                f"{name} v{version.version} has no {role!r} artifact",
                hint=f"it has: {', '.join(sorted(version.artifacts)) or 'none'}",
            )
        return self.version_dir(name, version.version) / version.artifacts[role]

    # -- writing -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifacts: Mapping[str, Path],
        metrics: Mapping[str, float] | None = None,
        run: str | Path | None = None,
        source: str | None = None,
        tags: Mapping[str, str] | None = None,
        copy: bool = True,
    ) -> ModelVersion:
        """Add the next version of ``name``. With ``copy`` each artifact (file or folder) is
        copied into ``v<N>/`` under its own file name (a Modelfile's ``FROM ./x.gguf`` keeps
        working); the copy happens outside the lock, in a staging folder renamed into place."""
        check_name(name)
        sources = {check_name(role, "artifact role"): Path(p) for role, p in artifacts.items()}
        for role, path in sources.items():
            if not path.exists():
                raise NotFoundError(f"artifact {role!r}: {str(path)!r} does not exist")
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        staging: Path | None = None
        stored: dict[str, str]
        if copy:
            staging, stored = _stage_copies(model_dir, sources)
        else:
            stored = {role: str(path.resolve()) for role, path in sources.items()}
        try:
            with self._locked(name):
                doc = self._read(name)
                number = _next_version(model_dir, doc)
                version = ModelVersion(
                    version=number,
                    created=_now(),
                    artifacts=stored,
                    metrics={str(k): float(v) for k, v in (metrics or {}).items()},
                    run=None if run is None else str(run),
                    source=source,
                    tags={str(k): str(v) for k, v in (tags or {}).items()},
                )
                if staging is not None:
                    staging.rename(model_dir / f"v{number}")
                    staging = None
                doc["versions"].append(version.to_dict())
                _log(doc, "register", number, None, None)
                self._write(name, doc)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return version

    def promote(self, name: str, ref: int | str, reason: str | None = None) -> ModelVersion:
        """Make ``ref`` the champion; the one it replaces is kept in history for rollback.
        Promoting the current champion changes nothing."""
        with self._locked(name):
            doc = self._read_existing(name)
            version = self._resolve(name, doc, ref)
            current = doc["aliases"].get(CHAMPION)
            if current == version.version:
                return version
            doc["aliases"][CHAMPION] = version.version
            _log(doc, "promote", version.version, current, reason)
            self._write(name, doc)
        return version

    def rollback(self, name: str, reason: str | None = None) -> ModelVersion:
        """Make champion again the version that was champion before the current one."""
        with self._locked(name):
            doc = self._read_existing(name)
            stack = _champion_stack(doc["history"])
            if len(stack) < 2:
                current = f"v{stack[-1]}" if stack else "none"
                raise UsageError(
                    f"{name}: no earlier champion to roll back to (champion: {current})",
                    hint=f"promote a version instead: hwkit models promote {name} REF",
                )
            version = self._by_number(name, doc, stack[-2])
            doc["aliases"][CHAMPION] = version.version
            _log(doc, "rollback", version.version, stack[-1], reason)
            self._write(name, doc)
        return version

    # -- files -------------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        return self.root / check_name(name) / REGISTRY_FILE

    def _read(self, name: str) -> dict[str, Any]:
        """The registry document, or an empty one for a model not registered yet."""
        path = self._file(name)
        if not path.is_file():
            return {"format": FORMAT, "name": name, "versions": [], "aliases": {}, "history": []}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable registry file: {exc}") from None
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if not isinstance(fmt, int):
            raise ConfigError(f"{path}: no integer 'format' field; not an hwkit registry file")
        if fmt > FORMAT:
            raise ConfigError(
                f"{path}: registry format {fmt} was written by a newer hwkit "
                f"(this one reads format {FORMAT})",
                hint="upgrade hwkit",
            )
        for key, empty in (("versions", []), ("aliases", {}), ("history", [])):
            doc.setdefault(key, empty)
        return doc

    def _read_existing(self, name: str) -> dict[str, Any]:
        if not self._file(name).is_file():
            raise NotFoundError(
                f"no model {name!r} in the registry {self.root}",
                hint=f"known: {', '.join(self.names()) or 'none'}",
            )
        return self._read(name)

    def _write(self, name: str, doc: dict[str, Any]) -> None:
        doc["format"], doc["name"] = FORMAT, name
        write_json_atomic(self._file(name), doc)

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """An exclusive ``flock`` on ``ROOT/<name>/.lock`` for one read-modify-write."""
        lock = self.root / check_name(name) / ".lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _resolve(self, name: str, doc: dict[str, Any], ref: int | str) -> ModelVersion:
        if isinstance(ref, int):
            return self._by_number(name, doc, ref)
        match = _REF.fullmatch(ref.strip())
        if match:
            return self._by_number(name, doc, int(match.group(1)))
        if ref == LATEST and doc["versions"]:
            return self._by_number(name, doc, max(int(v["version"]) for v in doc["versions"]))
        if ref == CHAMPION:
            if CHAMPION not in doc["aliases"]:
                raise NotFoundError(
                    f"{name} has no champion yet",
                    hint=f"promote a version: hwkit models promote {name} REF",
                )
            return self._by_number(name, doc, int(doc["aliases"][CHAMPION]))
        raise NotFoundError(
            f"{name}: no version or alias {ref!r}",
            hint=f"versions: {_listing(doc)}; aliases: {CHAMPION}, {LATEST}",
        )

    def _by_number(self, name: str, doc: dict[str, Any], number: int) -> ModelVersion:
        for row in doc["versions"]:
            if int(row["version"]) == number:
                return ModelVersion.from_dict(row)
        raise NotFoundError(f"{name} has no version v{number}", hint=f"versions: {_listing(doc)}")


def _listing(doc: dict[str, Any]) -> str:
    return ", ".join(f"v{v['version']}" for v in doc["versions"]) or "none"


def _log(
    doc: dict[str, Any], action: Action, version: int, previous: int | None, reason: str | None
) -> None:
    entry = HistoryEntry(_now(), action, version, previous, reason)
    doc["history"].append(asdict(entry))


def _champion_stack(history: list[dict[str, Any]]) -> list[int]:
    """Champions in the order they took over, replayed from history: a promote pushes, a
    rollback pops. The last item is the champion, the one before it is where rollback goes."""
    stack: list[int] = []
    for entry in history:
        if entry["action"] == "promote":
            stack.append(int(entry["version"]))
        elif entry["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _next_version(model_dir: Path, doc: dict[str, Any]) -> int:
    """One above every recorded version and every ``v<N>`` folder (a folder renamed into
    place by a process killed before it wrote registry.json is never reused)."""
    numbers = [int(v["version"]) for v in doc["versions"]]
    numbers += [
        int(m.group(1)) for p in model_dir.iterdir() if (m := _VERSION_DIR.fullmatch(p.name))
    ]
    return max(numbers, default=0) + 1


def _copy_artifact(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=False)
    else:
        shutil.copy2(src, dst)


def _staging_prefix(pid: int) -> str:
    """Staging folders carry the host and process that copy into them, so a later register
    can tell the folders of killed processes from those of copies still running."""
    host = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())
    return f".staging-{host}-{pid}"


def _sweep_staging(model_dir: Path) -> None:
    """Remove the staging folders this host's killed registers left behind (a process that
    is gone cannot finish its copy); other hosts' are left to them."""
    pattern = re.compile(re.escape(_staging_prefix(0)[: -len("-0")]) + r"-(\d+)-")
    for folder in model_dir.glob(".staging-*"):
        match = pattern.match(folder.name)
        if match is None or _alive(int(match.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _stage_copies(model_dir: Path, sources: Mapping[str, Path]) -> tuple[Path, dict[str, str]]:
    """Copy every artifact into a fresh ``.staging-*`` folder; on any failure the folder is
    removed and the error goes on. Returns the folder and role -> file name inside it."""
    names: dict[str, str] = {}
    for role, path in sources.items():
        base = path.resolve().name
        clash = next((r for r, n in names.items() if n == base), None)
        if clash is not None:
            raise UsageError(f"artifacts {clash!r} and {role!r} have the same file name {base!r}")
        names[role] = base
    _sweep_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(os.getpid())}-", dir=model_dir))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would become the version folder's mode
        for role, path in sources.items():
            _copy_artifact(path, staging / names[role])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, names
