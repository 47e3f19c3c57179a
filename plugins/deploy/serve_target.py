"""The ``serve`` deploy target: a running ``hwkit serve`` that serves a registry's champion.

The server is started once with ``hwkit serve -m NAME=registry:NAME --registry DIR``; it
follows the champion of ``NAME`` in that registry and switches to a new champion without
dropping requests (``hwkit.plugins.serving.champion``). The registry is therefore the
source of truth: ``deploy`` makes the version the champion (a pipeline has normally
promoted it already, and promoting the champion changes nothing) and waits until the
server's ``/health`` says it serves it; ``rollback`` makes the previous version the
champion again and waits the same way. The artifacts a pipeline passes are not read: the
server loads the version's own artifacts from the registry.

Talks to the server with the standard library: no proxy from the environment, no
redirects followed; ``/health`` needs no token.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hwkit.deploy import DeployError, Deployment, DeployTarget
from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.log import get_logger
from hwkit.plugins.deploy.http import get_status, opener

log = get_logger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
CHECK_TIMEOUT_S = 3.0  # /health answers at once when the server is up
DEPLOY_TIMEOUT_S = 120.0  # until the server serves the version (its load included)
POLL_S = 0.25
REASON = "deploy target serve"


def _url(option: str | None) -> str:
    raw = (option or DEFAULT_URL).strip().rstrip("/")
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"serve target: url {raw!r} is not an http(s) address")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):  # the OpenAI base URL given instead of the server's
        path = path[:-3]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class ServeTarget(DeployTarget):
    """Deploys to a running ``hwkit serve -m NAME=registry:NAME``. Options: ``url`` (the
    server, default ``http://127.0.0.1:8000``), ``registry`` (the registry root the server
    watches; default ``$HWKIT_REGISTRY_DIR`` or ``~/.local/share/hwkit/registry``) and
    ``timeout`` (seconds to wait for the server to serve a version, default 120)."""

    name = "serve"
    description = "a running hwkit serve that follows the registry's champion"

    def __init__(
        self,
        *,
        url: str | None = None,
        registry: str | Path | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(options)
        if unknown:
            raise ConfigError(
                f"serve target: unknown option(s) {', '.join(unknown)}",
                hint="known: url, registry, timeout",
            )
        from hwkit.plugins.pipeline.registry import ModelRegistry

        super().__init__(url=url, registry=None if registry is None else str(registry))
        self.url = _url(url)
        self.registry = ModelRegistry(None if registry is None else Path(registry).expanduser())
        self.timeout = float(timeout) if timeout is not None else DEPLOY_TIMEOUT_S
        self._http = opener()

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1"

    # -- the server's /health ---------------------------------------------------------------
    def _health(self, timeout: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
        """``GET /health`` as a mapping; UnavailableError (one line) when there is none."""
        health = get_status(
            self._http,
            self.url + "/health",
            timeout,
            unreachable=UnavailableError(
                f"hwkit serve is not reachable at {self.url}",
                hint="start it with `hwkit serve -m NAME=registry:NAME` or set the target's `url`",
            ),
            wrong_server=f"{self.url} is not an hwkit server",
            wrong_hint="set the serve target's `url` to a running hwkit serve",
        )
        if not isinstance(health, dict) or not isinstance(health.get("placements"), dict):
            raise UnavailableError(
                f"{self.url} is not an hwkit server: GET /health has no placements",
                hint="set the serve target's `url` to a running hwkit serve",
            )
        return health

    def _served(self, health: Mapping[str, Any], name: str) -> dict[str, Any]:
        """``name``'s placement, after checking the server follows it in this registry."""
        if name not in (health.get("models") or []):
            raise ConfigError(
                f"the server at {self.url} does not serve {name!r}",
                hint=f"start it with: hwkit serve -m {name}=registry:{name} "
                f"--registry {self.registry.root}",
            )
        placed = dict(health["placements"].get(name) or {})
        if placed and "registry_version" not in placed:
            raise ConfigError(
                f"the server at {self.url} serves {name!r} from a fixed source, "
                "not from the registry",
                hint=f"serve it with -m {name}=registry:{name}",
            )
        root = placed.get("registry")
        if root is not None and Path(root).resolve() != self.registry.root.resolve():
            raise ConfigError(
                f"the server at {self.url} follows {name!r} in the registry {root}, "
                f"this target promotes in {self.registry.root}",
                hint="give the target the server's registry, or start the server with "
                f"--registry {self.registry.root}",
            )
        return placed

    def _deployment(self, name: str, version: int, placed: Mapping[str, Any]) -> Deployment:
        return Deployment(
            target=self.name,
            name=name,
            version=version,
            endpoint=self.endpoint,
            model=name,
            details={
                "registry": str(self.registry.root),
                "device": placed.get("device"),
                "runtime": placed.get("runtime"),
                "loaded_at": placed.get("loaded_at"),
            },
        )

    def _wait(self, name: str, version: int) -> Deployment:
        """Until ``/health`` says ``name`` serves ``version``; DeployError when the server
        could not load it or did not switch within ``timeout``."""
        deadline = time.monotonic() + self.timeout
        placed: dict[str, Any] = {}
        while True:
            try:
                placed = self._served(self._health(), name)
            except UnavailableError as exc:
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"the server stopped answering while switching {name} to v{version}: "
                        f"{exc.message}",
                        hint=f"the registry's champion is v{version} already",
                    ) from None
                placed = {}
            if placed.get("registry_version") == version:
                return self._deployment(name, version, placed)
            error = placed.get("registry_error")
            if error and placed.get("registry_champion") == version:
                raise DeployError(
                    f"the server at {self.url} could not load {name} v{version}: "
                    f"{str(error).removeprefix(f'v{version}: ')}",
                    hint=f"it still serves v{placed.get('registry_version')}; roll back or "
                    "promote another version",
                )
            if time.monotonic() > deadline:
                serving = placed.get("registry_version")
                raise DeployError(
                    f"the server at {self.url} did not switch {name} to v{version} within "
                    f"{self.timeout:g} s (it serves "
                    f"{'v' + str(serving) if serving is not None else 'nothing loaded'})",
                    hint="check the server's log; its watcher reads registry.json every second",
                )
            time.sleep(POLL_S)

    # -- the contract ----------------------------------------------------------------------
    def check(self) -> None:
        self._health()

    def deploy(self, name: str, version: int, artifacts: Mapping[str, Path]) -> Deployment:
        from hwkit.plugins.pipeline.registry import check_name

        check_name(name)
        self._served(self._health(), name)  # nothing changes when the server cannot follow
        self.registry.get(name, version)  # NotFoundError for a version never registered
        champion = self.registry.champion(name)
        if champion is None or champion.version != version:
            self.registry.promote(name, version, reason=REASON)
        deployment = self._wait(name, version)
        log.info("deploy.serve", model=name, version=version, url=self.url)
        return deployment

    def rollback(self, name: str, previous: Deployment | None) -> Deployment | None:
        from hwkit.plugins.pipeline.registry import check_name

        check_name(name)
        self._served(self._health(), name)
        if previous is None:
            raise NotFoundError(
                f"serve target: nothing to roll {name} back to: the server serves the "
                "registry's champion, and there was none before",
                hint=f"promote another version (hwkit models promote {name} REF) or stop "
                "the server",
            )
        champion = self.registry.champion(name)
        if champion is None or champion.version != previous.version:
            before = self.registry.previous_champion(name)
            if before is not None and before.version == previous.version:
                self.registry.rollback(name, reason=REASON)
            else:
                self.registry.promote(name, previous.version, reason=f"{REASON}: rollback")
        deployment = self._wait(name, previous.version)
        log.info("deploy.serve.rollback", model=name, version=previous.version, url=self.url)
        return deployment

    def current(self, name: str) -> Deployment | None:
        placed = self._served(self._health(), name)
        version = placed.get("registry_version")
        return None if version is None else self._deployment(name, int(version), placed)
