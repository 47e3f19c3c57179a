"""The OpenVINO IR cache: convert a model once, keyed by the sha256 of its files and options.

Layout: ``<root>/<key>/{model.xml, model.bin, meta.json}`` with ``root`` =
``$HWKIT_CACHE_DIR/openvino`` (default ``~/.cache/hwkit/openvino``). An entry is written
in a temporary directory and renamed into place, so a reader sees a whole entry or none,
and two processes converting at once both end with one valid entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from hwkit.log import get_logger
from hwkit.plugins.embedders.model_config import model_files

log = get_logger(__name__)

CACHE_ENV = "HWKIT_CACHE_DIR"
FORMAT_VERSION = 1  # bump when what is stored in an entry changes
XML, BIN, META = "model.xml", "model.bin", "meta.json"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where IR entries live: ``cache_dir``, else ``$HWKIT_CACHE_DIR/openvino``, else ~/.cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "hwkit"
    return root / "openvino"


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of one file; memoised per (path, size, mtime) so a process hashes a model once."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_digest(model_dir: Path) -> str:
    """sha256 over the names and contents of the files that define the model."""
    h = hashlib.sha256()
    for rel in model_files(model_dir):
        st = (model_dir / rel).stat()
        h.update(rel.as_posix().encode())
        h.update(_file_digest(str(model_dir / rel), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def cache_key(model_dir: Path, options: dict[str, Any]) -> str:
    """The entry name for ``model_dir`` converted with ``options`` (and this OpenVINO)."""
    import openvino

    payload = json.dumps(
        {
            "model": model_digest(model_dir),
            "options": options,
            "openvino": openvino.__version__,
            "format": FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def lookup(root: Path, key: str) -> Path | None:
    """The entry directory when a complete one exists."""
    entry = root / key
    if all((entry / name).is_file() for name in (XML, BIN, META)):
        return entry
    return None


def store(root: Path, key: str, write: Callable[[Path], dict[str, Any]]) -> Path:
    """Create entry ``key`` atomically: ``write(tmpdir)`` saves the IR and returns its metadata."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=root))
    try:
        meta = write(tmp)
        meta_tmp = tmp / (META + ".part")
        meta_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(meta_tmp, tmp / META)
        final = root / key
        try:
            os.replace(tmp, final)
        except OSError:
            if lookup(root, key) is None:  # not a lost race: a real failure
                raise
            log.debug("another process stored the same IR first", key=key)
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_meta(entry: Path) -> dict[str, Any]:
    return dict(json.loads((entry / META).read_text(encoding="utf-8")))
