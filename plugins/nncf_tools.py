"""NNCF helpers shared by the OpenVINO embedder and exporter: import with a clear error,
quiet logging, INT8 weight compression."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from hwkit.extras import require


def import_nncf() -> Any:
    """``nncf``, or a one-line error naming the extra that installs it."""
    return require("nncf", purpose="int8")


@contextlib.contextmanager
def quiet_nncf() -> Iterator[None]:
    """NNCF logs statistics tables at INFO (hwkit logs the conversion itself) and draws
    progress bars on stdout: those go to stderr, so ``--json`` output stays parseable."""
    from nncf.common.logging.logger import nncf_logger

    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_logger.setLevel(level)


def compress_int8_weights(model: Any) -> Any:
    """INT8 weight compression (weights int8 per channel, activations float)."""
    nncf = import_nncf()
    with quiet_nncf():
        return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
