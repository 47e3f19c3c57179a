"""pluggy hook specifications: each hook hands the plugin a ``register`` callable.

A plugin module defines any of these functions, decorated with :data:`hookimpl`, and is
named in the ``hwkit`` entry-point group of its distribution. Every hook has a test and
a doc entry (tests/test_hookspecs.py, docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "hwkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., Any]


@hookspec
def hwkit_register_backends(register: Register) -> None:
    """Register :class:`hwkit.device.Backend` subclasses: ``register(MyBackend)``."""


@hookspec
def hwkit_register_profiles(register: Register) -> None:
    """Register hardware profiles: ``register(path_to_toml)`` or ``register(HardwareProfile)``."""


@hookspec
def hwkit_register_trainers(register: Register) -> None:
    """Register :class:`hwkit.trainer.Trainer` subclasses."""


@hookspec
def hwkit_register_embedders(register: Register) -> None:
    """Register :class:`hwkit.embedder.Embedder` subclasses."""


@hookspec
def hwkit_register_retrievers(register: Register) -> None:
    """Register :class:`hwkit.retriever.Retriever` subclasses."""


@hookspec
def hwkit_register_exporters(register: Register) -> None:
    """Register :class:`hwkit.exporter.Exporter` subclasses."""
