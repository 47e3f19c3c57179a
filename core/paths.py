"""Where hwkit keeps what it derives: one cache root for converted models, OpenVINO IR and
Milvus Lite files, so nothing a run produces lands in the working directory by default."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HWKIT_CACHE_DIR"


def cache_root() -> Path:
    """``$HWKIT_CACHE_DIR`` or ``~/.cache/hwkit``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hwkit"


def cache_dir(kind: str) -> Path:
    """One area of the cache (``models``, ``openvino``, ``milvus``); not created here."""
    return cache_root() / kind
