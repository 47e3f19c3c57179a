"""pluggy hook specifications: each hook hands the plugin a ``register`` callable.

A plugin module defines any of these functions, decorated with :data:`hookimpl`, and is
named in the ``hwkit`` entry-point group of its distribution. Built-ins register through
the same entry points. Every hook has a test and a doc entry (tests/core/test_hookspecs.py,
docs/plugins.md).

``register`` checks what it is given: a class must subclass the hook's contract (a
:class:`~hwkit.device.Backend` for ``hwkit_register_backends``, and so on), else the plugin
is reported as failed in ``hwkit doctor`` and ``hwkit plugins``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import typer

    from hwkit.deploy import DeployTarget
    from hwkit.device import Backend
    from hwkit.embedder import Embedder
    from hwkit.exporter import Exporter
    from hwkit.hardware_profile import HardwareProfile
    from hwkit.inference import InferenceRuntime
    from hwkit.retriever import Retriever
    from hwkit.reward import Reward
    from hwkit.trainer import Trainer

PROJECT = "hwkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

C = TypeVar("C", contravariant=True)


class Register(Protocol[C]):
    """``register(item, name=None)``: ``name`` defaults to the item's ``name`` attribute."""

    def __call__(self, item: C, name: str | None = None) -> None: ...


@hookspec
def hwkit_register_backends(register: Register[type[Backend]]) -> None:
    """Register :class:`hwkit.device.Backend` subclasses: ``register(MyBackend)``."""


@hookspec
def hwkit_register_profiles(register: Register[Path | HardwareProfile]) -> None:
    """Register hardware profiles: ``register(path_to_toml)`` or ``register(HardwareProfile)``."""


@hookspec
def hwkit_register_trainers(register: Register[type[Trainer]]) -> None:
    """Register :class:`hwkit.trainer.Trainer` subclasses."""


@hookspec
def hwkit_register_embedders(register: Register[type[Embedder]]) -> None:
    """Register :class:`hwkit.embedder.Embedder` subclasses."""


@hookspec
def hwkit_register_retrievers(register: Register[type[Retriever]]) -> None:
    """Register :class:`hwkit.retriever.Retriever` subclasses."""


@hookspec
def hwkit_register_exporters(register: Register[type[Exporter]]) -> None:
    """Register :class:`hwkit.exporter.Exporter` subclasses."""


@hookspec
def hwkit_register_runtimes(register: Register[type[InferenceRuntime]]) -> None:
    """Register :class:`hwkit.inference.InferenceRuntime` subclasses (generation engines)."""


@hookspec
def hwkit_register_deploy_targets(register: Register[type[DeployTarget]]) -> None:
    """Register :class:`hwkit.deploy.DeployTarget` subclasses (where a pipeline deploys)."""


@hookspec
def hwkit_register_rewards(register: Register[type[Reward]]) -> None:
    """Register :class:`hwkit.reward.Reward` subclasses: named functions of
    (prompt, completion, row) -> float that GRPO and ``hwkit rewards pairs`` combine."""


@hookspec
def hwkit_register_commands(cli: typer.Typer) -> None:
    """Add command groups or commands to the ``hwkit`` command line (as ``llm``'s
    ``register_commands`` does). Import heavy libraries inside the commands, not here."""
