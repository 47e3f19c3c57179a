"""The plugin manager: loads each ``hwkit`` entry point on its own and keeps going.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to import;
here a failure is recorded (plugin, distribution, stage, error) and shown by
``hwkit doctor`` and ``hwkit plugins`` while every other plugin still works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from hwkit import hookspecs
from hwkit.errors import HwkitError
from hwkit.registry import Registry

if TYPE_CHECKING:
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

ENTRY_POINT_GROUP = "hwkit"
DISABLE_ENV = "HWKIT_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "hwkit"

# hook name -> (registry attribute, what it registers)
HOOKS: dict[str, tuple[str, str]] = {
    "hwkit_register_backends": ("backends", "backend"),
    "hwkit_register_profiles": ("profiles", "profile"),
    "hwkit_register_trainers": ("trainers", "trainer"),
    "hwkit_register_embedders": ("embedders", "embedder"),
    "hwkit_register_retrievers": ("retrievers", "retriever"),
    "hwkit_register_exporters": ("exporters", "exporter"),
    "hwkit_register_runtimes": ("runtimes", "runtime"),
    "hwkit_register_deploy_targets": ("deploy_targets", "deploy target"),
    "hwkit_register_rewards": ("rewards", "reward"),
}
# Hooks that register no named items: called with another argument (the CLI).
COMMAND_HOOK = "hwkit_register_commands"

# registry attribute -> "module:class" of the contract its classes must subclass
# (profiles are data); imported when plugins are collected, not when hwkit starts.
CONTRACTS: dict[str, str | None] = {
    "backends": "hwkit.device:Backend",
    "profiles": None,
    "trainers": "hwkit.trainer:Trainer",
    "embedders": "hwkit.embedder:Embedder",
    "retrievers": "hwkit.retriever:Retriever",
    "exporters": "hwkit.exporter:Exporter",
    "runtimes": "hwkit.inference:InferenceRuntime",
    "deploy_targets": "hwkit.deploy:DeployTarget",
    "rewards": "hwkit.reward:Reward",
}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    distribution: str | None
    version: str | None

    @property
    def builtin(self) -> bool:
        return self.distribution == BUILTIN_DISTRIBUTION


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    distribution: str | None
    stage: str  # "import" or the hook name
    error: str

    def one_line(self) -> str:
        dist = f" (from {self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{dist} failed at {self.stage}: {self.error}"


def disabled_from_env(value: str | None = None) -> set[str]:
    """Names in ``HWKIT_DISABLE_PLUGINS`` (comma/space separated); ``*``: all third-party."""
    raw = os.environ.get(DISABLE_ENV, "") if value is None else value
    return {part.strip() for part in raw.replace(",", " ").split() if part.strip()}


def _describe(exc: BaseException) -> str:
    text = exc.one_line() if isinstance(exc, HwkitError) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PluginManager:
    """Holds the pluggy manager and one registry per kind of plugin.

    The registries are filled on first use (``collect``): the command line imports the
    plugins to learn their commands, and only a command that needs backends, profiles or
    trainers pays for calling every register hook.
    """

    def __init__(self, disabled: set[str] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = disabled_from_env() if disabled is None else set(disabled)
        self.plugins: list[PluginInfo] = []
        self.skipped: list[PluginInfo] = []
        self._failures: list[PluginFailure] = []
        self._registries: dict[str, Registry[Any]] = {}
        self._collected = False

    # -- registries (collected on first use) --------------------------------------------------
    def _get(self, attr: str) -> Registry[Any]:
        self.ensure_collected()
        return self._registries[attr]

    @property
    def backends(self) -> Registry[type[Backend]]:
        return self._get("backends")

    @property
    def profiles(self) -> Registry[HardwareProfile]:
        return self._get("profiles")

    @property
    def trainers(self) -> Registry[type[Trainer]]:
        return self._get("trainers")

    @property
    def embedders(self) -> Registry[type[Embedder]]:
        return self._get("embedders")

    @property
    def retrievers(self) -> Registry[type[Retriever]]:
        return self._get("retrievers")

    @property
    def exporters(self) -> Registry[type[Exporter]]:
        return self._get("exporters")

    @property
    def runtimes(self) -> Registry[type[InferenceRuntime]]:
        return self._get("runtimes")

    @property
    def deploy_targets(self) -> Registry[type[DeployTarget]]:
        return self._get("deploy_targets")

    @property
    def rewards(self) -> Registry[type[Reward]]:
        return self._get("rewards")

    @property
    def failures(self) -> list[PluginFailure]:
        """Every failure: imports, registrations, register hooks and command hooks."""
        self.ensure_collected()
        return self._failures

    # -- loading -----------------------------------------------------------------------
    def _is_disabled(self, name: str, distribution: str | None) -> bool:
        if name in self.disabled or (distribution and distribution in self.disabled):
            return True
        return "*" in self.disabled and distribution != BUILTIN_DISTRIBUTION

    def load_entry_points(self) -> PluginManager:
        """Import every ``hwkit`` entry point, built-ins first, each on its own."""
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        # A distribution's name and version parse its METADATA file: once per distribution,
        # not once per entry point (hwkit alone has a dozen).
        owners: dict[int, tuple[str | None, str | None]] = {}
        for ep in eps:
            dist = getattr(ep, "dist", None)
            if id(dist) not in owners:
                owners[id(dist)] = (dist.name, dist.version) if dist is not None else (None, None)

        def owner(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
            return owners[id(getattr(ep, "dist", None))]

        eps.sort(key=lambda ep: (owner(ep)[0] != BUILTIN_DISTRIBUTION, owner(ep)[0] or "", ep.name))
        seen: set[str] = set()
        for ep in eps:
            dist, version = owner(ep)
            info = PluginInfo(ep.name, ep.value, dist, version)
            if ep.name in seen:
                self._failures.append(
                    PluginFailure(ep.name, dist, "import", "another plugin already uses this name")
                )
                continue
            seen.add(ep.name)
            if self._is_disabled(ep.name, dist):
                self.skipped.append(info)
                continue
            try:
                module = ep.load()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._failures.append(PluginFailure(ep.name, dist, "import", _describe(exc)))
                continue
            self.register_plugin(module, ep.name, distribution=dist, version=info.version)
        return self

    def register_plugin(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a module or object with hook implementations (tests, embedding apps)."""
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:
            self._failures.append(PluginFailure(name, distribution, "register", _describe(exc)))
            return
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.plugins.append(PluginInfo(name, module, distribution, version))
        self._collected = False

    # -- collecting --------------------------------------------------------------------
    def collect(self) -> PluginManager:
        """Call each plugin's register hooks one plugin at a time, isolating failures."""
        self._registries = {attr: _registry(attr) for attr, _ in HOOKS.values()}
        self._failures = [
            f for f in self._failures if f.stage in ("import", "register", COMMAND_HOOK)
        ]
        order = {info.name: i for i, info in enumerate(self.plugins)}
        dists = {info.name: info.distribution for info in self.plugins}
        for hook_name, (registry_attr, _what) in HOOKS.items():
            registry = self._registries[registry_attr]
            for impl in self._impls(hook_name, order):
                owner = impl.plugin_name
                register = self._registrar(registry, owner, dists.get(owner), hook_name)
                try:
                    impl.function(register)
                except Exception as exc:
                    self._failures.append(
                        PluginFailure(owner, dists.get(owner), hook_name, _describe(exc))
                    )
        self._collected = True
        return self

    def _impls(self, hook_name: str, order: dict[str, int]) -> list[Any]:
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return sorted(impls, key=lambda i: order.get(i.plugin_name, len(order)))

    def add_commands(self, cli: typer.Typer) -> None:
        """Let each plugin add its commands to ``cli``, one plugin at a time; a plugin whose
        hook fails is recorded and the others' commands still arrive."""
        order = {info.name: i for i, info in enumerate(self.plugins)}
        dists = {info.name: info.distribution for info in self.plugins}
        for impl in self._impls(COMMAND_HOOK, order):
            owner = impl.plugin_name
            try:
                impl.function(cli)
            except Exception as exc:
                self._failures.append(
                    PluginFailure(owner, dists.get(owner), COMMAND_HOOK, _describe(exc))
                )

    def _registrar(
        self, registry: Registry[Any], owner: str, dist: str | None, hook_name: str
    ) -> Callable[..., None]:
        def register(item: Any, name: str | None = None) -> None:
            if registry.what == "profile":
                from hwkit.hardware_profile import HardwareProfile, load_profile

                if not isinstance(item, HardwareProfile):
                    try:
                        item = load_profile(Path(item))
                    except HwkitError as exc:  # one bad file must not hide the others
                        self._failures.append(PluginFailure(owner, dist, hook_name, exc.one_line()))
                        return
            key = name or getattr(item, "name", None)
            if not isinstance(key, str) or not key:
                raise TypeError(f"a {registry.what} needs a non-empty string `name`: {item!r}")
            try:
                registry.add(key, item, owner)
            except (ValueError, TypeError) as exc:
                self._failures.append(PluginFailure(owner, dist, hook_name, str(exc)))

        return register

    def ensure_collected(self) -> PluginManager:
        if not self._collected:
            self.collect()
        return self


def _registry(attr: str) -> Registry[Any]:
    import importlib

    what = {v[0]: v[1] for v in HOOKS.values()}[attr]
    contract = CONTRACTS[attr]
    base = None
    if contract is not None:
        module, _, name = contract.partition(":")
        base = getattr(importlib.import_module(module), name)
    return Registry(what, base)


def load_plugins(disabled: set[str] | None = None) -> PluginManager:
    """A manager with every entry point loaded and collected."""
    return PluginManager(disabled).load_entry_points().collect()
