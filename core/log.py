"""Logging: a person's output on a terminal, structured JSON lines everywhere else.

* On a terminal, log events below WARNING are not shown (commands print their own
  progress and results with rich); ``-v`` shows them as readable lines.
* On a non-terminal (CI, a pipe, a service) every event is a JSON line on stderr.
* While a job runs, every event is also appended to its run directory's ``log.jsonl``
  (:func:`run_log`), so nothing a terminal hides is lost.
* Python warnings from libraries (FutureWarning, DeprecationWarning) become log events
  (:func:`capture_warnings`): in the run log and JSON output, not in a person's terminal.
"""

from __future__ import annotations

import contextlib
import json as _json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

_configured = False
_verbose = False
_run_log: ContextVar[Path | None] = ContextVar("hwkit_run_log", default=None)


def _to_run_log(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Append the event to the active job's log.jsonl (one JSON object per line)."""
    path = _run_log.get()
    if path is not None:
        try:
            with path.open("a", encoding="utf-8") as fh:
                fh.write(_json.dumps(event, default=str, ensure_ascii=False) + "\n")
        except OSError:  # a full or vanished run directory must not stop the job
            pass
    return event


def _terminal_gate(
    _logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """On a terminal, show warnings and errors only (unless -v)."""
    if not _verbose and method in ("debug", "info") and sys.stderr.isatty():
        import structlog

        raise structlog.DropEvent
    return event


def configure(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog. ``json=None`` picks JSON when stderr is not a terminal."""
    import structlog

    global _configured, _verbose
    if json is None:
        json = os.environ.get("HWKIT_LOG_JSON", "") not in ("", "0") or not sys.stderr.isatty()
    level_name = (level or os.environ.get("HWKIT_LOG_LEVEL") or "INFO").upper()
    _verbose = level_name == "DEBUG" or json
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
            _to_run_log,
            _terminal_gate,
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


class _Logger:
    """A structlog logger made on first use: modules create theirs at import time, and
    ``hwkit --help`` should not pay for importing structlog and rich."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: Any = None

    def __getattr__(self, method: str) -> Any:
        if self._real is None:
            import structlog

            if not _configured:
                configure()
            self._real = structlog.get_logger(self._name)
        return getattr(self._real, method)


def get_logger(name: str) -> Any:
    """A logger for ``name``; structlog is configured (defaults) on its first event."""
    return _Logger(name)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """While the block runs, every log event is also appended to ``path`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = _run_log.set(path)
    try:
        yield path
    finally:
        _run_log.reset(token)


def capture_warnings() -> None:
    """Route Python warnings through the log instead of printing them on stderr."""
    log = get_logger("py.warnings")

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        log.info(
            "library.warning",
            category=category.__name__,
            message=str(message),
            where=f"{filename}:{lineno}",
        )

    warnings.showwarning = show
