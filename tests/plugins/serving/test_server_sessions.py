"""Session memory: the server's remembered history never opens with an assistant turn."""

from __future__ import annotations

from hwkit.plugins.serving.sessions import SessionStore, trim_history


def _turn(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]


def test_history_keeps_the_last_messages_in_order() -> None:
    store = SessionStore(keep=4)
    for i in range(3):
        store.extend("s", _turn(i))
    assert [m["content"] for m in store.history("s")] == ["q1", "a1", "q2", "a2"]


def test_history_opens_at_a_user_turn_when_keep_is_odd() -> None:
    # keep=3 over user/assistant pairs would otherwise start at a reply.
    store = SessionStore(keep=3)
    for i in range(3):
        store.extend("s", _turn(i))
    assert [m["content"] for m in store.history("s")] == ["q2", "a2"]


def test_history_drops_system_messages_and_separates_sessions() -> None:
    store = SessionStore(keep=10)
    store.extend("a", [{"role": "system", "content": "persona"}, *_turn(0)])
    store.extend("b", _turn(1))
    assert [m["content"] for m in store.history("a")] == ["q0", "a0"]
    assert [m["content"] for m in store.history("b")] == ["q1", "a1"]
    assert store.history("unknown") == []


def test_oldest_session_is_forgotten_beyond_max_sessions() -> None:
    store = SessionStore(keep=10, max_sessions=2)
    for name in ("a", "b", "c"):
        store.extend(name, _turn(0))
    assert len(store) == 2 and store.history("a") == []


def test_trim_history_with_a_client_sent_odd_batch() -> None:
    history = [
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
    ]
    assert [m["content"] for m in trim_history(history, 10)] == ["q1", "a1"]
    assert trim_history(history, 0) == []
