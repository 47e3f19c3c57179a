"""The OpenVINO IR cache: convert a model once, keyed by its content digest and options.

Layout: ``<root>/<key>/{model.xml, model.bin, meta.json}``, ``root`` being
``hwkit.paths.cache_dir("openvino")`` unless the embedder is given another. An entry is
written in a temporary directory and renamed into place, so a reader sees a whole entry or
none, and two processes converting at once both end with one valid entry.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwkit.atomic import write_json_atomic
from hwkit.hashing import model_digest, text_digest
from hwkit.log import get_logger
from hwkit.paths import cache_dir

log = get_logger(__name__)

FORMAT_VERSION = 1  # bump when what is stored in an entry changes
XML, BIN, META = "model.xml", "model.bin", "meta.json"


def cache_root(directory: str | os.PathLike[str] | None = None) -> Path:
    """``directory`` when given, else the core's OpenVINO cache area."""
    return Path(directory).expanduser() if directory is not None else cache_dir("openvino")


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
    return text_digest(payload)


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
        write_json_atomic(tmp / META, meta)
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
