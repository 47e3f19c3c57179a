"""Meta-tests: every hook has a test that exercises it and an entry in the plugin guide
(after datasette's test_plugin_hooks_have_tests)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from hwkit import hookspecs
from hwkit.plugin_manager import COMMAND_HOOK, CONTRACTS, HOOKS, PluginManager

REPO = Path(__file__).resolve().parents[2]
HOOK_NAMES = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("hwkit_")
)


def test_every_hookspec_is_collected_by_the_manager() -> None:
    assert set(HOOK_NAMES) == set(HOOKS) | {COMMAND_HOOK}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_register_hook_has_a_contract_and_a_registry(hook: str) -> None:
    registry_attr, _what = HOOKS[hook]
    assert registry_attr in CONTRACTS, f"CONTRACTS needs an entry for {registry_attr}"
    assert isinstance(getattr(PluginManager, registry_attr, None), property), (
        f"PluginManager needs a `{registry_attr}` property for {hook}"
    )


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_has_a_doc_entry(hook: str) -> None:
    guide = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert f"### `{hook}`" in guide, f"docs/plugins.md needs a section for {hook}"


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_hook_has_a_test(hook: str) -> None:
    this = Path(__file__).resolve()
    implementations = [
        path
        for path in (*REPO.glob("tests/**/*.py"), *REPO.glob("examples/*/tests/*.py"))
        if path.resolve() != this and hook in path.read_text(encoding="utf-8")
    ]
    assert implementations, f"no test implements or exercises {hook}"
