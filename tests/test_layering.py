"""The architecture, checked: the core reaches workloads only through the plugin manager,
production code never leans on the testing kit, and the allocator plans from capabilities,
never from a backend's name."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("core", "backends", "plugins", "profiles")
BACKEND_NAMES = re.compile(r"\b(cpu|cuda|xpu|npu|mps|rocm|hip)\b", re.IGNORECASE)


def _modules(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module an import statement or importlib.import_module("...") names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def test_no_core_module_imports_a_plugin() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules("core")
        for line, name in _imports(path)
        if name == "hwkit.plugins" or name.startswith("hwkit.plugins.")
    ]
    assert not found, "the core must reach plugins through entry points:\n" + "\n".join(found)


def test_no_production_module_imports_the_testing_kit() -> None:
    kit = REPO / "core" / "testing"
    found = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in _modules(*PRODUCTION)
        if not path.is_relative_to(kit)
        for line, name in _imports(path)
        if name == "hwkit.testing" or name.startswith("hwkit.testing.")
    ]
    assert not found, "production code must not depend on hwkit.testing:\n" + "\n".join(found)


def _code_words(path: Path) -> Iterator[tuple[int, str]]:
    """String literals (not docstrings), names, and attributes of a module; a device's
    ``kind`` reads as ``device.kind``. ``tensor.cpu()`` is torch's copy to host memory, not
    a backend, and is left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node.lineno, node.value
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            if node.attr == "kind":
                yield node.lineno, ast.unparse(node)
            elif node.attr != "cpu":
                yield node.lineno, node.attr


def test_the_allocator_names_no_backend() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {word!r}"
        for path in _modules("core/allocator")
        for line, word in _code_words(path)
        if BACKEND_NAMES.search(word) or word.endswith("device.kind")
    ]
    assert not found, "plan from capabilities and profiles, not backend names:\n" + "\n".join(found)


def test_the_checks_would_catch_a_violation(tmp_path: Path) -> None:
    """The scanners above see what they are meant to see (so a pass means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import importlib\n"
        "from hwkit.plugins.data import prepare\n"
        "importlib.import_module('hwkit.testing.mock')\n"
        "def f(device):\n"
        "    '''Runs on the CPU.'''\n"
        "    return device.kind == 'cuda'\n",
        encoding="utf-8",
    )
    names = {name for _, name in _imports(bad)}
    assert "hwkit.plugins.data" in names and "hwkit.testing.mock" in names
    words = {word for _, word in _code_words(bad)}
    assert "cuda" in words and "device.kind" in words and "Runs on the CPU." not in words
