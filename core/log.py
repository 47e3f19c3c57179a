"""structlog set-up: readable console lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_configured = False


def configure(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog once. ``json=None`` picks JSON when stderr is not a terminal."""
    global _configured
    if json is None:
        json = os.environ.get("HWKIT_LOG_JSON", "") not in ("", "0") or not sys.stderr.isatty()
    level_name = (level or os.environ.get("HWKIT_LOG_LEVEL") or "INFO").upper()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level_name, logging.INFO)
        ),
        # Look sys.stderr up per logger: test runners swap and close it between tests.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str) -> Any:
    """A bound structlog logger; configures defaults on first use."""
    if not _configured:
        configure()
    return structlog.get_logger(name)
