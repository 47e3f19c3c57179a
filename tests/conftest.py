"""Shared test set-up: offline hubs, the shared data folder, a clean hwkit environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.example_backend import activate

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HWKIT_SHARED_DATA", REPO.parent / "shared" / "data"))

# Nothing in the test suite may reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Converted models and OpenVINO IR go to a cache inside the checkout (ignored by git), never
# into the developer's own ~/.cache/hwkit.
os.environ.setdefault("HWKIT_CACHE_DIR", str(REPO / ".cache" / "hwkit-test"))
# The example third-party backend, as an installed plugin for the tests only.
activate()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HWKIT_SHARED_DATA``): real datasets, never copied into the repo."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder {SHARED_DATA} is missing; set HWKIT_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _no_profile_override(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests choose profiles explicitly; a developer's HWKIT_PROFILE must not leak in, and
    each test starts with a fresh process runtime (the loaded plugins are shared). A test
    that made a mock runtime current leaves a fresh one behind too: a module-scoped fixture
    set up before the next module's first test would otherwise plan on the mock."""
    from hwkit.runtime import Runtime, current, set_current

    monkeypatch.delenv("HWKIT_PROFILE", raising=False)
    monkeypatch.delenv("HWKIT_DISABLE_PLUGINS", raising=False)
    plugins = current().plugins
    set_current(Runtime(plugins))
    yield
    set_current(Runtime(plugins))


@pytest.fixture(scope="session")
def tiny_cross_encoder(shared_data: Path) -> Path:
    """A ``hwkit train cross-encoder`` run directory: a few steps on a SciFact slice
    (tests/cross_encoder_kit.py), trained once for all test processes (read-only: copy it
    to change it); its ``model/`` is a weak but real reranker."""
    import hwkit.plugins.trainers.cross_encoder as cross_encoder
    from tests import cross_encoder_kit
    from tests.fixture_cache import built_once, package_files

    def build(folder: Path) -> None:
        data = cross_encoder_kit.scifact_slice(shared_data / "scifact", folder / "slice")
        cross_encoder_kit.train_tiny(data, folder / "run")

    sources = [*package_files(cross_encoder), Path(cross_encoder_kit.__file__)]
    return built_once("tiny-cross-encoder", sources, build) / "run"
