"""hwkit's on-disk index: a directory with a manifest, checksums and atomic replacement.

Layout of ``DIR``::

    manifest.json   format version, retriever kind and options, embedder identity,
                    doc count, rejected count, sha256 of every other file
    docs.jsonl      ids, titles and texts in index order
    rejects.jsonl   rows that were not indexed (no text), when there were any
    bm25/           the bm25s index (bm25, hybrid)
    vectors.npy     float32 unit vectors, row i = document i (dense, hybrid); mmap-able
    hnsw.faiss      FAISS HNSW graph, only above the dense ANN threshold

A save builds the whole index in a temporary sibling directory, writes the manifest
last, then swaps it in with ``os.replace``: the previous index stays complete and
loadable until the new one is. A load refuses a newer format version or any checksum
mismatch with a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hwkit.atomic import write_text_atomic
from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.hashing import file_digest
from hwkit.log import get_logger
from hwkit.plugins.retrievers.documents import DocTable, check_documents
from hwkit.rejects import Reject, read_rejects, write_rejects
from hwkit.retriever import Document, Retriever

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.jsonl"
REJECTS = "rejects.jsonl"

log = get_logger(__name__)
R = TypeVar("R", bound="StoredRetriever")


@dataclass
class Manifest:
    """What an index directory holds and how to check it."""

    format_version: int
    retriever: str
    options: dict[str, Any]
    doc_count: int
    files: dict[str, str]  # relative path -> sha256
    embedder: dict[str, Any] | None = None
    rejected: int = 0
    hwkit_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def _hwkit_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("hwkit")
    except metadata.PackageNotFoundError:
        return "unknown"


def _checksums(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): file_digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def is_index_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_index(
    path: Path,
    *,
    retriever: str,
    options: dict[str, Any],
    docs: DocTable,
    write_parts: Callable[[Path], None],
    embedder: dict[str, Any] | None = None,
    rejects: Sequence[Reject] = (),
    extra: dict[str, Any] | None = None,
) -> Manifest:
    """Build an index directory at ``path`` atomically; the old one survives any failure."""
    path = Path(path)
    if path.exists() and not is_index_dir(path) and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(
            f"{path} exists and is not an hwkit index",
            hint="choose a new or empty directory; hwkit only replaces its own indexes",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.building-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; an index is as readable as any output
    try:
        docs.write_jsonl(tmp / DOCS)
        if rejects:
            write_rejects(tmp / REJECTS, rejects)
        write_parts(tmp)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            retriever=retriever,
            options=options,
            doc_count=len(docs),
            files=_checksums(tmp),
            embedder=embedder,
            rejected=len(rejects),
            hwkit_version=_hwkit_version(),
            extra=extra or {},
        )
        write_text_atomic(tmp / MANIFEST, manifest.to_json())
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("index saved", path=str(path), retriever=retriever, docs=len(docs))
    return manifest


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace ``path`` by ``tmp``; restore the old directory if the second rename fails."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(path: Path, *, verify: bool = True) -> Manifest:
    """Read and check ``path/manifest.json``; ``verify`` re-hashes every listed file."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise NotFoundError(
            f"no hwkit index at {path} ({MANIFEST} missing)",
            hint="build one with `hwkit index build`",
        )
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{mpath}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    version = raw.get("format_version")
    if not isinstance(version, int):
        raise ConfigError(f"{mpath}: field 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{path}: index format version {version} is newer than "
            f"this hwkit reads ({FORMAT_VERSION})",
            hint="upgrade hwkit or rebuild the index",
        )
    try:
        manifest = Manifest(**raw)
    except TypeError as exc:
        raise ConfigError(f"{mpath}: unexpected manifest fields ({exc})") from None
    if verify:
        for rel, expected in manifest.files.items():
            f = path / rel
            if not f.is_file():
                raise ConfigError(
                    f"{path}: file {rel} listed in the manifest is missing",
                    hint="rebuild the index",
                )
            got = file_digest(f)
            if got != expected:
                raise ConfigError(
                    f"{path}: checksum mismatch for {rel} "
                    f"(sha256 {got[:12]}…, manifest {expected[:12]}…)",
                    hint="the index was modified or corrupted; rebuild it",
                )
    return manifest


def read_index_rejects(path: Path) -> list[Reject]:
    """The rejects an index directory lists. Indexes written before hwkit.rejects kept the
    rejected input under ``"row"``; it is read back as the reject's ``record``."""
    return [_upgrade(r) for r in read_rejects(Path(path) / REJECTS)]


def _upgrade(reject: Reject) -> Reject:
    if isinstance(reject.row, dict):  # old format: "row" held the record, not a row number
        return dataclasses.replace(reject, record=reject.row, row=None)
    return reject


class StoredRetriever(Retriever):
    """A retriever saved as an hwkit index directory; subclasses write and read their parts."""

    docs: DocTable
    rejects: list[Reject]

    def _replace_docs(self, docs: Iterable[Document]) -> None:
        """Start over with ``docs``: keep the valid ones, record the rest as rejects."""
        kept, self.rejects = check_documents(docs)
        if self.rejects:
            log.warning("documents rejected", count=len(self.rejects), reason="no text")
        self.docs = DocTable()
        self.docs.extend(kept)

    def _append_docs(self, docs: Iterable[Document]) -> int:
        """Append the valid, not yet indexed ``docs``; returns where the new ones start."""
        kept, rejects = check_documents(docs, existing_ids=self.docs.ids)
        self.rejects.extend(rejects)
        start = len(self.docs)
        self.docs.extend(kept)
        return start

    def documents(self, ids: Sequence[str]) -> list[Document]:
        return self.docs.documents(ids)

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """JSON-ready constructor options recorded in the manifest."""

    def embedder_info(self) -> dict[str, Any] | None:
        return None

    @abstractmethod
    def write_parts(self, directory: Path) -> None:
        """Write this retriever's files (not docs.jsonl or the manifest) into ``directory``."""

    @classmethod
    @abstractmethod
    def read_parts(
        cls: type[R], directory: Path, manifest: Manifest, docs: DocTable, **kwargs: Any
    ) -> R:
        """Rebuild the retriever from its files."""

    def save(self, path: Path) -> None:
        write_index(
            Path(path),
            retriever=self.name,
            options=self.options(),
            docs=self.docs,
            write_parts=self.write_parts,
            embedder=self.embedder_info(),
            rejects=self.rejects,
        )

    @classmethod
    def load(cls: type[R], path: Path, *, verify: bool = True, **kwargs: Any) -> R:
        path = Path(path)
        manifest = read_manifest(path, verify=verify)
        if manifest.retriever != cls.name:
            raise ConfigError(
                f"{path} holds a {manifest.retriever!r} index, not {cls.name!r}",
                hint=f"load it with the {manifest.retriever!r} retriever or `hwkit search`",
            )
        docs = DocTable.read_jsonl(path / DOCS)
        if len(docs) != manifest.doc_count:
            raise ConfigError(
                f"{path}: {DOCS} has {len(docs)} rows, manifest says {manifest.doc_count}"
            )
        retriever = cls.read_parts(path, manifest, docs, **kwargs)
        retriever.rejects = read_index_rejects(path)
        return retriever

    def __len__(self) -> int:
        return len(self.docs)


def open_index(
    path: Path, *, verify: bool = True, runtime: Runtime | None = None, **kwargs: Any
) -> Retriever:
    """Load any index directory with the retriever its manifest names, from the runtime's
    registry (plugins included); an embedder it needs is built on ``runtime`` (default:
    the process's)."""
    from hwkit.runtime import current

    rt = runtime or current()
    manifest = read_manifest(path, verify=False)
    cls = rt.plugins.retrievers.get(manifest.retriever)
    if isinstance(cls, type) and issubclass(cls, StoredRetriever):
        return cls.load(Path(path), verify=verify, runtime=rt, **kwargs)
    return cls.load(Path(path))
