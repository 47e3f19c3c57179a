"""The ``ollama`` deploy target: a GGUF and hwkit's Modelfile to a tagged Ollama model.

Ollama serves the model under ``NAME:latest`` (its OpenAI-compatible API at ``HOST/v1``);
each deployed version is also tagged ``NAME:v<version>``, and whatever served before a
deploy is copied to ``NAME:prev``, so a rollback is one ``/api/copy`` and never a
re-upload. Talks to Ollama's REST API with the standard library, sends nothing but the
Modelfile's fields and the GGUF to the configured host: no proxy from the environment,
no redirects followed, no credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from hwkit.deploy import DeployError, Deployment, DeployTarget
from hwkit.errors import ConfigError, NotFoundError, UnavailableError
from hwkit.log import get_logger
from hwkit.plugins.deploy.http import error_text, get_status, one_line, opener

log = get_logger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"
DEFAULT_PORT = 11434
CHECK_TIMEOUT_S = 3.0  # /api/version answers at once when the server is up
CALL_TIMEOUT_S = 30.0
# Per socket operation, not in total: a large blob upload or a create that parses a big
# GGUF may stay silent for a while.
LONG_TIMEOUT_S = 600.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_MODELFILE_LINE = re.compile(
    r'^(?P<key>[A-Za-z]+)[ \t]+(?:"""(?P<triple>.*?)"""|(?P<rest>[^\n]*))[ \t]*$',
    re.M | re.S,
)


def _host(option: str | None) -> str:
    """``host`` option, else ``$OLLAMA_HOST``, else the local default; Ollama's own forms
    (``0.0.0.0``, ``host:port``, a URL) are accepted."""
    raw = (option or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if "://" not in raw:
        raw = f"http://{raw}"
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"ollama target: host {raw!r} is not an http(s) address")
    netloc = parts.netloc if parts.port else f"{parts.netloc}:{DEFAULT_PORT}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _parse_json(body: bytes) -> Any:
    """One JSON object, or the last of a JSON-lines stream (``stream`` ignored by a server)."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        pass
    last: Any = {}
    for line in text.splitlines():
        if line.strip():
            last = json.loads(line)
            if isinstance(last, dict) and "error" in last:
                return last
    return last


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _value(raw: str) -> Any:
    """A PARAMETER value as JSON: Ollama's ``parameters`` take numbers and booleans typed."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1]
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def parse_modelfile(path: Path) -> dict[str, Any]:
    """The Modelfile's instructions as ``/api/create`` fields, plus ``from`` (the FROM path).

    ADAPTER and anything else ``/api/create`` cannot take from a GGUF upload is refused, so
    a Modelfile hwkit did not write cannot deploy a different model than it describes.
    """
    text = Path(path).read_text(encoding="utf-8")
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    messages: list[dict[str, str]] = []
    licenses: list[str] = []
    # Comment lines start with "#" and never match; a triple-quoted value is consumed whole.
    for m in _MODELFILE_LINE.finditer(text):
        key = m.group("key").upper()
        triple = m.group("triple")
        value = triple if triple is not None else (m.group("rest") or "").strip()
        if triple is None and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        if key == "FROM":
            fields["from"] = value
        elif key in ("TEMPLATE", "SYSTEM"):
            fields[key.lower()] = value
        elif key == "PARAMETER":
            pname, _, pvalue = value.partition(" ")
            if not pname or not pvalue.strip():
                raise ConfigError(f"{path}: PARAMETER needs a name and a value: {value!r}")
            if pname == "stop":
                stop = pvalue.strip()
                if len(stop) >= 2 and stop[0] == stop[-1] == '"':
                    stop = stop[1:-1]
                params.setdefault("stop", []).append(stop)
            else:
                params[pname] = _value(pvalue)
        elif key == "MESSAGE":
            role, _, content = value.partition(" ")
            messages.append({"role": role, "content": content.strip()})
        elif key == "LICENSE":
            licenses.append(value)
        else:
            raise ConfigError(
                f"{path}: the ollama target does not deploy Modelfile instruction {key}",
                hint="FROM, TEMPLATE, SYSTEM, PARAMETER, MESSAGE and LICENSE are supported",
            )
    if params:
        fields["parameters"] = params
    if messages:
        fields["messages"] = messages
    if licenses:
        fields["license"] = licenses if len(licenses) > 1 else licenses[0]
    return fields


class OllamaTarget(DeployTarget):
    """Deploys to an Ollama server: ``NAME:latest`` serves, ``NAME:v<N>`` and ``NAME:prev``
    keep what rollback needs. Options: ``host`` (else ``$OLLAMA_HOST``, else
    ``http://127.0.0.1:11434``) and ``timeout`` (seconds per call, default 30)."""

    name = "ollama"
    description = "an Ollama server: NAME:latest, NAME:v<version>, NAME:prev for rollback"

    def __init__(
        self, *, host: str | None = None, timeout: float | None = None, **options: Any
    ) -> None:
        unknown = sorted(options)
        if unknown:
            raise ConfigError(
                f"ollama target: unknown option(s) {', '.join(unknown)}",
                hint="known: host, timeout",
            )
        super().__init__(host=host, timeout=timeout)
        self.host = _host(host)
        self.timeout = float(timeout) if timeout is not None else CALL_TIMEOUT_S
        self._http = opener()

    @property
    def endpoint(self) -> str:
        return f"{self.host}/v1"

    # -- HTTP ------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        upload: Path | None = None,
        timeout: float | None = None,
        missing_ok: bool = False,
    ) -> Any:
        """One request; ``None`` for a 404 when ``missing_ok``. Errors are one line naming
        the call and Ollama's error text."""
        call = f"{method} {path}"
        headers = {"Accept": "application/json"}
        data: bytes | BinaryIO | None = None
        fh: BinaryIO | None = None
        if upload is not None:
            fh = open(upload, "rb")  # noqa: SIM115 - closed below, streamed by http.client
            data = fh
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(upload.stat().st_size)
        elif body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.host + path, data=data, headers=headers, method=method
        )
        try:
            with self._http.open(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            raise DeployError(
                f"Ollama {call} failed with HTTP {exc.code}: {error_text(exc.read())}",
                hint=f"Ollama at {self.host}",
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeployError(
                f"Ollama at {self.host} stopped answering during {call}: {reason}",
                hint="check the server log (`ollama serve`); nothing was retried",
            ) from None
        finally:
            if fh is not None:
                fh.close()
        if method == "HEAD":
            return {}
        result = _parse_json(raw)
        if isinstance(result, dict) and "error" in result:
            raise DeployError(
                f"Ollama {call} failed: {one_line(str(result['error']))}",
                hint=f"Ollama at {self.host}",
            )
        return result

    def _models(self) -> dict[str, str]:
        """``{tagged name (lower case): manifest digest}`` from ``/api/tags``."""
        listing = self._call("GET", "/api/tags")
        models = listing.get("models") if isinstance(listing, dict) else None
        return {
            str(m.get("name") or m.get("model")).lower(): str(m.get("digest", ""))
            for m in models or []
            if isinstance(m, dict) and (m.get("name") or m.get("model"))
        }

    def _copy(self, source: str, destination: str) -> None:
        self._call("POST", "/api/copy", {"source": source, "destination": destination})

    # -- the contract ----------------------------------------------------------------------
    def check(self) -> None:
        status = get_status(
            self._http,
            self.host + "/api/version",
            min(self.timeout, CHECK_TIMEOUT_S),
            unreachable=UnavailableError(
                f"Ollama is not reachable at {self.host}",
                hint="start it with `ollama serve` or set OLLAMA_HOST",
            ),
            wrong_server=f"{self.host} is not an Ollama server",
            wrong_hint="set the target's `host` or OLLAMA_HOST to Ollama's address",
        )
        version = status.get("version") if isinstance(status, dict) else None
        if not version:
            raise UnavailableError(
                f"{self.host} is not an Ollama server: GET /api/version gave no version",
                hint="set the target's `host` or OLLAMA_HOST to Ollama's address",
            )

    def deploy(self, name: str, version: int, artifacts: Mapping[str, Path]) -> Deployment:
        _check_name(name, version)
        fields, gguf = _inputs(artifacts)
        self.check()
        latest, tagged = f"{name}:latest", f"{name}:v{version}"
        before = self._models()
        prev: str | None = None
        if latest.lower() in before:
            prev = f"{name}:prev"
            self._copy(latest, prev)
        blob = sha256_file(gguf)
        blob_path = f"/api/blobs/sha256:{blob}"
        uploaded = False
        if self._call("HEAD", blob_path, missing_ok=True) is None:
            self._call("POST", blob_path, upload=gguf, timeout=LONG_TIMEOUT_S)
            uploaded = True
        request = {
            "model": latest,
            "files": {gguf.name: f"sha256:{blob}"},
            **fields,
            "stream": False,
        }
        self._call("POST", "/api/create", request, timeout=LONG_TIMEOUT_S)
        self._copy(latest, tagged)
        digest = self._models().get(latest.lower(), "")
        log.info(
            "deploy.ollama", model=latest, tag=tagged, host=self.host, prev=prev, uploaded=uploaded
        )
        return self._serving(
            name, version, digest=digest, blob=f"sha256:{blob}", tag=tagged, prev=prev
        )

    def rollback(self, name: str, previous: Deployment | None) -> Deployment | None:
        _check_name(name, 0)
        self.check()
        latest = f"{name}:latest"
        models = self._models()
        if previous is None:
            # Nothing served before: take the failed version out of service. Its
            # NAME:v<N> tag stays, so it can still be inspected.
            if latest.lower() in models:
                self._call("DELETE", "/api/delete", {"model": latest})
            log.info("deploy.ollama.rollback", model=latest, restored=None, host=self.host)
            return None
        candidates = (f"{name}:v{previous.version}", f"{name}:prev")
        source = next((c for c in candidates if c.lower() in models), None)
        if source is None:
            raise NotFoundError(
                f"Ollama at {self.host} has neither {candidates[0]} nor {candidates[1]} "
                "to roll back to",
                hint=f"{latest} was left as it is",
            )
        self._copy(source, latest)
        digest = self._models().get(latest.lower(), "")
        log.info("deploy.ollama.rollback", model=latest, restored=source, host=self.host)
        return self._serving(name, previous.version, digest=digest, restored_from=source, prev=None)

    def current(self, name: str) -> Deployment | None:
        _check_name(name, 0)
        models = self._models()
        latest = f"{name}:latest"
        digest = models.get(latest.lower())
        if digest is None:
            return None
        prefix = f"{name}:v".lower()
        versions = [
            int(tag[len(prefix) :])
            for tag, d in models.items()
            if tag.startswith(prefix) and tag[len(prefix) :].isdigit() and d == digest
        ]
        version = max(versions) if versions else 0  # 0: NAME:latest was made outside hwkit
        prev = f"{name}:prev" if f"{name}:prev".lower() in models else None
        tag = f"{name}:v{version}" if versions else None
        return self._serving(name, version, digest=digest, tag=tag, prev=prev)

    def _serving(self, name: str, version: int, **details: Any) -> Deployment:
        """``NAME:latest`` at this host's OpenAI endpoint, as version ``version``."""
        return Deployment(
            target=self.name,
            name=name,
            version=version,
            endpoint=self.endpoint,
            model=f"{name}:latest",
            details=details,
        )


def _check_name(name: str, version: int) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or ":" in name:
        raise ConfigError(
            f"ollama target: {name!r} is not a model name Ollama accepts without a tag",
            hint="letters, digits, '.', '_', '-' and '/'; the target adds :latest and :v<N>",
        )
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError(f"ollama target: version must be a non-negative integer: {version!r}")


def _inputs(artifacts: Mapping[str, Path]) -> tuple[dict[str, Any], Path]:
    """The ``/api/create`` fields from the Modelfile and the GGUF to upload, checked before
    anything is sent. Without a ``gguf`` artifact, the Modelfile's FROM file is used."""
    fields: dict[str, Any] = {}
    modelfile = artifacts.get("modelfile")
    if modelfile is not None:
        modelfile = Path(modelfile)
        if not modelfile.is_file():
            raise ConfigError(f"ollama target: the Modelfile {modelfile} does not exist")
        fields = parse_modelfile(modelfile)
    source = fields.pop("from", None)
    gguf = artifacts.get("gguf")
    if gguf is None and source and modelfile is not None:
        candidate = (modelfile.parent / source).resolve()
        gguf = candidate if candidate.is_file() else None
    if gguf is None:
        raise ConfigError(
            "ollama target: no GGUF to deploy",
            hint="pass a 'gguf' artifact (hwkit export ollama writes one beside its Modelfile)",
        )
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ConfigError(f"ollama target: the GGUF {gguf} does not exist")
    return fields, gguf
