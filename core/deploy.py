"""The DeployTarget contract: put a registered model version in service, and take it back.

A pipeline ("from database to deployed model, with gates") promotes a version only after
its gates pass, then asks a target to serve it; when a later gate fails it asks the same
target to roll back. Targets are plugins (``hwkit_register_deploy_targets``), so a cloud
endpoint is a peer of the built-in Ollama target. Every target answers with a
:class:`Deployment`: an OpenAI-compatible base URL and the model name to send to it, which
is all a client (``hwkit eval``, a RAG app) needs to reach what was deployed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hwkit.errors import EXIT_UNAVAILABLE, ConfigError, HwkitError

# The artifact roles a pipeline hands a target; a target reads the ones it needs.
ARTIFACT_ROLES = ("gguf", "modelfile", "model_dir", "run")


class DeployError(HwkitError):
    """A target answered a call with an error, after ``check`` passed: something may have
    changed already. Deliberately not an :class:`~hwkit.errors.UnavailableError`, which
    promises that nothing changed."""

    exit_code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class Deployment:
    """What is in service on a target: enough for a client to call it and for a pipeline
    to record it (``to_dict``) and roll back to it later (``from_dict``)."""

    target: str  # the DeployTarget's registered name
    name: str  # the registry's model name
    version: int  # the registry's version number
    endpoint: str | None  # OpenAI-compatible base URL ending in /v1; None when not served
    model: str  # the model name to send to ``endpoint``
    details: dict[str, Any] = field(default_factory=dict)  # target-specific, JSON-safe

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name,
            "version": self.version,
            "endpoint": self.endpoint,
            "model": self.model,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deployment:
        """The inverse of ``to_dict``; a malformed record is a ConfigError naming the field."""
        for key, kind in (("target", str), ("name", str), ("model", str)):
            if not isinstance(data.get(key), kind):
                raise ConfigError(f"deployment record: {key!r} must be a string, got {data!r}")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConfigError(f"deployment record: 'version' must be an integer, got {version!r}")
        endpoint = data.get("endpoint")
        if endpoint is not None and not isinstance(endpoint, str):
            raise ConfigError(
                f"deployment record: 'endpoint' must be a string or null: {endpoint!r}"
            )
        details = data.get("details", {})
        if not isinstance(details, Mapping):
            raise ConfigError(f"deployment record: 'details' must be a mapping, got {details!r}")
        return cls(data["target"], data["name"], version, endpoint, data["model"], dict(details))


class DeployTarget(ABC):
    """Puts a model version in service and can put the previous one back.

    A target is built from the options of a pipeline file (``DeployTarget(**options)``),
    so it must not reach the network in ``__init__``. ``check`` runs before anything
    changes: a pipeline calls it before its gates, so an unreachable target fails early.
    """

    name: ClassVar[str]  # "ollama", or a plugin's own
    description: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    @abstractmethod
    def deploy(self, name: str, version: int, artifacts: Mapping[str, Path]) -> Deployment:
        """Serve ``version`` of ``name`` from ``artifacts`` (roles: "gguf", "modelfile",
        "model_dir", "run"); keep what served before so ``rollback`` can restore it."""

    @abstractmethod
    def rollback(self, name: str, previous: Deployment | None) -> Deployment | None:
        """Put ``previous`` back in service and return it as now served; with ``None``
        (nothing served before) take ``name`` out of service and return ``None``."""

    def current(self, name: str) -> Deployment | None:
        """What serves ``name`` now, or ``None``; a target that cannot tell returns ``None``."""
        return None

    def check(self) -> None:
        """Raise :class:`~hwkit.errors.UnavailableError` (one line, with a hint) when the
        target is unreachable. Must change nothing; the default assumes it is reachable."""
        return None
