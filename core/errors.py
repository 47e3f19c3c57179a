"""Typed errors: each message names the bad value and what to do, and maps to an exit code.

The CLI turns any :class:`HwkitError` into one line on stderr and its ``exit_code``;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwkit.plan import Plan

# Exit codes, documented in docs/cli.md.
EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure (a bug): traceback shown
EXIT_USAGE = 2  # bad command line / bad input value
EXIT_CONFIG = 3  # a config, profile or data file is invalid
EXIT_NOT_FOUND = 4  # a named thing (profile, plugin, model, file) does not exist
EXIT_NO_FIT = 5  # the allocator found no plan that fits the hardware
EXIT_UNAVAILABLE = 6  # a device, backend, database or server is unreachable
EXIT_NOT_READY = 7  # `hwkit data check`: the data does not meet the readiness minimums
EXIT_VERIFY_FAILED = 8  # an export failed its verification; nothing was renamed into place
EXIT_INTERRUPTED = 130


class HwkitError(Exception):
    """Base of every error hwkit raises on purpose."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message and the hint on one line, as the CLI prints it."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(HwkitError):
    exit_code = EXIT_USAGE


class ConfigError(HwkitError):
    """A file (profile, config, dataset) is malformed; the message names file and field."""

    exit_code = EXIT_CONFIG


class NotFoundError(HwkitError):
    exit_code = EXIT_NOT_FOUND


class UnknownNameError(NotFoundError, KeyError):
    """A registry lookup failed; lists what is registered."""

    def __init__(self, what: str, name: str, known: list[str]) -> None:
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown {what} {name!r}", hint=f"known: {listing}")
        self.what, self.name, self.known = what, name, sorted(known)

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.one_line()


class NoFitError(HwkitError):
    """No plan fits; carries the nearest plan that would."""

    exit_code = EXIT_NO_FIT
    nearest: Plan | None  # set by the planner


class UnavailableError(HwkitError):
    exit_code = EXIT_UNAVAILABLE


class PluginError(HwkitError):
    """A plugin failed to load or register; collected, never fatal to other plugins."""
