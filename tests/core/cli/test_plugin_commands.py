"""Plugins bring their commands (``hwkit_register_commands``): a third party's command is a
peer of hwkit's own, and a plugin whose hook fails costs only its own commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_hwkit
from tests.fake_dist import make_distribution

GREETER = """
import typer
from hwkit.hookspecs import hookimpl

@hookimpl
def hwkit_register_commands(cli):
    @cli.command("greet")
    def greet(name: str = typer.Argument("world")) -> None:
        '''Say hello from a third-party plugin.'''
        from hwkit.runtime import current
        typer.echo(f"hello {name}; {len(current().plugins.backends)} backends")
"""

BROKEN = """
from hwkit.hookspecs import hookimpl

@hookimpl
def hwkit_register_commands(cli):
    raise RuntimeError("command table corrupt")
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_distribution(
        tmp_path / "site",
        "vendor-cli",
        {"greeter_mod": GREETER, "broken_cli_mod": BROKEN},
        {"greeter": "greeter_mod", "brokencli": "broken_cli_mod"},
    )


def test_a_third_party_command_runs_and_is_listed(site: Path) -> None:
    helped = run_hwkit("--help", pythonpath=site, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "greet" in helped.stdout and "Say hello from a third-party plugin" in helped.stdout
    ran = run_hwkit("greet", "plugins", pythonpath=site, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("hello plugins; ") and "backends" in ran.stdout


def test_a_failing_commands_hook_is_reported_and_hwkit_keeps_its_commands(site: Path) -> None:
    result = run_hwkit("plugins", "--json", pythonpath=site, timeout=60)
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)["errors"]
    assert any(
        "brokencli" in e and "hwkit_register_commands" in e and "command table corrupt" in e
        for e in errors
    ), errors
    helped = run_hwkit("--help", pythonpath=site, timeout=60)
    for command in ("train", "search", "export", "serve", "data", "greet"):
        assert command in helped.stdout


def test_workload_commands_come_from_plugins_not_the_core() -> None:
    """Disabling a built-in plugin removes its commands: the core holds none of them."""
    result = run_hwkit("--help", timeout=60, HWKIT_DISABLE_PLUGINS="trainers,serving")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert {"doctor", "plugins", "profiles", "plan", "search", "export"} <= listed
    assert not {"train", "quickstart", "serve", "chat"} & listed
