"""The deploy targets' HTTP: the configured host only (no proxies from the environment, no
redirects, no credentials), and a GET of a JSON status page whose failures say which of two
things went wrong: nothing answers, or something that is not the expected server does."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hwkit.errors import UnavailableError


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would send a model (or a request) somewhere other than the configured host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def get_status(
    http: urllib.request.OpenerDirector,
    url: str,
    timeout: float,
    *,
    unreachable: UnavailableError,
    wrong_server: str,
    wrong_hint: str,
) -> Any:
    """``GET url`` parsed as JSON (None when the body is not JSON). ``unreachable`` is raised
    when nothing answers; an HTTP error is ``wrong_server: GET PATH answered HTTP CODE``."""
    request = urllib.request.Request(url, method="GET")
    try:
        with http.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        path = urllib.parse.urlsplit(url).path
        raise UnavailableError(
            f"{wrong_server}: GET {path} answered HTTP {exc.code}: {error_text(exc.read())}",
            hint=wrong_hint,
        ) from None
    except (urllib.error.URLError, OSError):
        raise unreachable from None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(body: bytes) -> str:
    """A server's ``{"error": "..."}`` (Ollama's and OpenAI's form), else the body as text."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return one_line(text) or "(no body)"
    if isinstance(data, dict) and "error" in data:
        return one_line(str(data["error"]))
    return one_line(text)
