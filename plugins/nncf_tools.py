"""NNCF helpers shared by the OpenVINO embedder and exporter: import with a clear error,
quiet logging, INT8 and INT4 weight compression."""

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


INT4_GROUP_SIZE = 128


def compress_int4_weights(model: Any, group_size: int = INT4_GROUP_SIZE) -> Any:
    """INT4 symmetric weight compression in groups of ``group_size`` (NNCF's default ratio
    and INT8 backup for the embedding and the last layer). A layer whose input width is
    not a multiple of the group size gets groups of the largest power of two that divides
    it (NNCF's ``ADJUST`` fallback: 64 for a 576-wide layer), or INT8 when that is below
    32, instead of failing the export."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

    advanced = AdvancedCompressionParameters(
        group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
    )
    with quiet_nncf():
        return nncf.compress_weights(
            model,
            mode=nncf.CompressWeightsMode.INT4_SYM,
            group_size=group_size,
            advanced_parameters=advanced,
        )
