"""The entry point turns a bad command line into click's usage message and exit code 2,
never a traceback (typer ships its own copy of click; both kinds are recognised)."""

from __future__ import annotations

import pytest

from tests.cli import run_hwkit


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("plan", "sft"), "Missing option '--model'"),
        (("export", "gguf", "x", "--min-agreement", "abc"), "Invalid value for '--min-agreement'"),
        (("no-such-command",), "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_a_message_and_exit_2(args: tuple[str, ...], says: str) -> None:
    result = run_hwkit(*args, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
