"""The ``hwkit`` command line: a skeleton the plugins fill.

The core brings the commands about hwkit itself (``doctor``, ``plugins``, ``profiles``,
``plan``); every workload command (``data``, ``train``, ``index``, ``search``, ``export``,
``serve``, ...) arrives through the ``hwkit_register_commands`` hook of the plugin that owns
it, a built-in or a third party's. The plugin manager is loaded once, here, and becomes the
process's runtime, so commands reach it with :func:`hwkit.runtime.current`.

Command modules import only typer and hwkit's light core at the top; torch, transformers
and openvino are imported inside the commands that need them, so ``hwkit --help`` is fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer

from hwkit.errors import EXIT_INTERRUPTED, HwkitError

# The core's own commands; each module defines ``register(app: typer.Typer) -> None``.
CORE_COMMANDS = [
    "hwkit.cli.doctor",
    "hwkit.cli.profiles_cmd",
    "hwkit.cli.plugins_cmd",
    "hwkit.cli.plan",
]

app = typer.Typer(
    name="hwkit",
    help="Fine-tune, embed, retrieve, export and serve language models on the hardware you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    log_json: bool = typer.Option(
        False, "--log-json", help="Log JSON lines (default on non-terminals)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    from hwkit import log

    log.configure(json=True if log_json else None, level="DEBUG" if verbose else None)


def _build() -> None:
    """Core commands, then each plugin's, from the process's one plugin manager."""
    from hwkit.plugin_manager import PluginManager
    from hwkit.runtime import Runtime, set_current

    for name in CORE_COMMANDS:
        importlib.import_module(name).register(app)
    plugins = PluginManager().load_entry_points()  # registries fill on first use
    plugins.add_commands(app)
    set_current(Runtime(plugins))


_build()


def _quiet_libraries() -> None:
    """On a terminal, library chatter (warnings, transformers' advisories) goes to the log,
    not between the lines a person reads; ``-v`` or a non-terminal keeps everything."""
    from hwkit import log

    log.capture_warnings()
    if sys.stderr.isatty() and not {"-v", "--verbose"} & set(sys.argv[1:]):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        # Hub, transformers (weight loading) and datasets (tokenising, packing) progress bars:
        # hwkit's own progress display says what is happening.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    """Entry point: hwkit errors become one line on stderr and a documented exit code."""
    _quiet_libraries()
    try:
        result = app(standalone_mode=False)
        # click returns the code of a typer.Exit here instead of raising it
        sys.exit(result if isinstance(result, int) else 0)
    except HwkitError as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # click usage errors arrive here with standalone_mode=False
        usage = _click_exception_types()
        if usage and isinstance(exc, usage):
            shown: Any = exc  # a ClickException of typer's click or of the click package
            shown.show()
            sys.exit(shown.exit_code)
        raise


def _click_exception_types() -> tuple[type[Exception], ...]:
    """click's usage-error base class: typer >= 0.20 ships its own copy of click
    (``typer._click``), older typers use the click package; accept either."""
    import importlib

    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(found)
