"""Chat sessions (the last N messages per session id) and persona presets (system prompts).

A client names its session with the ``X-Session-Id`` header or the OpenAI ``user`` field;
it then sends only its new messages and the server supplies the remembered ones.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path

import tomllib

from hwkit.errors import ConfigError, UnknownNameError

Message = dict[str, str]

BUILTIN_PERSONAS: dict[str, str] = {
    "assistant": "You are a helpful assistant. Answer clearly and briefly.",
    "concise": "You answer in one short sentence, without preamble.",
    "tutor": "You are a patient tutor. Explain step by step and check understanding.",
    "coder": "You are a senior software engineer. Answer with working code and a short note.",
}


def trim_history(history: list[Message], keep: int) -> list[Message]:
    """The last ``keep`` messages, starting at a user turn.

    A plain ``history[-keep:]`` can cut between a question and its reply, so the
    conversation would open with an assistant message; templates that require
    user/assistant alternation (Mistral's, for one) raise on that.
    """
    kept = history[-keep:] if keep > 0 else []
    while kept and kept[0]["role"] != "user":
        kept = kept[1:]
    return kept


class SessionStore:
    """Session id -> the last ``keep`` non-system messages; at most ``max_sessions`` kept."""

    def __init__(self, keep: int = 10, max_sessions: int = 1000) -> None:
        self.keep = keep
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, deque[Message]] = OrderedDict()
        self._lock = threading.Lock()

    def history(self, session: str) -> list[Message]:
        """The remembered messages, opening at a user turn (see :func:`trim_history`)."""
        with self._lock:
            return trim_history(list(self._sessions.get(session, ())), self.keep)

    def extend(self, session: str, messages: list[Message]) -> None:
        with self._lock:
            store = self._sessions.get(session)
            if store is None:
                store = self._sessions[session] = deque(maxlen=self.keep)
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(session)
            store.extend(m for m in messages if m["role"] != "system")

    def __len__(self) -> int:
        return len(self._sessions)


def load_personas(path: Path | None) -> dict[str, str]:
    """Built-in presets, overridden and extended by a TOML file of ``[name] system = "..."``."""
    personas = dict(BUILTIN_PERSONAS)
    if path is None:
        return personas
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path}: {exc}", hint="personas are [name] tables with system = '...'"
        ) from exc
    for name, table in data.items():
        system = table.get("system") if isinstance(table, dict) else None
        if not isinstance(system, str) or not system.strip():
            raise ConfigError(f"{path}: [{name}] needs a non-empty string field 'system'")
        personas[name] = system
    return personas


def persona_prompt(personas: dict[str, str], name: str) -> str:
    if name not in personas:
        raise UnknownNameError("persona", name, list(personas))
    return personas[name]
