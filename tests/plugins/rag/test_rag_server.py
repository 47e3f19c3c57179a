"""``hwkit serve --rag``: a model that answers from an index, streamed, with citations the
official ``openai`` client reads. SmolLM2's GGUF (llama.cpp runtime) over a BM25 index of
real squad-open paragraphs, on a mock CPU; a second model of the same file without RAG."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import UsageError
from hwkit.plugins.rag.evaluation import read_qa
from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.routes import create_app
from hwkit.testing import mock_runtime
from tests.plugins.rag.squad_index import saved_squad_slice
from tests.plugins.serving.live_server import running

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rag-serve") / "index"
    return saved_squad_slice(shared_data / "squad-open", 3, path)


@pytest.fixture(scope="module")
def server(index: Path) -> Iterator[dict[str, Any]]:
    from hwkit.models import SMOLLM2

    gguf = str(SMOLLM2.gguf_path())
    config = ServeConfig(
        models={"rag": gguf, "plain": gguf}, rag={"rag": index}, default_max_tokens=24
    )
    app = create_app(config, mock_runtime("cpu"))
    with running(app) as port:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        yield {"client": client, "state": app.state.hwkit}


def test_a_rag_model_answers_from_the_index_with_citations(
    server: dict[str, Any], shared_data: Path
) -> None:
    question = read_qa(shared_data / "squad-open", "test", 1)[0].question
    messages = [{"role": "user", "content": question}]
    rag = server["state"].rag["rag"]
    passages = rag.retriever.documents([h.id for h in rag.retriever.search(question, k=3)])
    reply = server["client"].chat.completions.create(model="rag", messages=messages)
    text = reply.choices[0].message.content
    cites = reply.model_extra["citations"]
    for c in cites:  # every [n] in the text with a passage n is there, and nothing else
        assert (
            c["id"] == passages[c["number"] - 1].id and c["text"] == passages[c["number"] - 1].text
        )
    from hwkit.plugins.rag.checks import citations

    assert [c["number"] for c in cites] == [n for n in citations(text) if 1 <= n <= 3]
    chunks = list(
        server["client"].chat.completions.create(model="rag", messages=messages, stream=True)
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the stream says what the whole reply said
    assert chunks[-1].choices[0].finish_reason and chunks[-1].model_extra["citations"] == cites


def test_the_prompt_holds_the_passages_only_for_the_rag_model(
    server: dict[str, Any], shared_data: Path
) -> None:
    question = read_qa(shared_data / "squad-open", "test", 2)[1].question
    messages = [{"role": "user", "content": question}]
    plain = server["client"].chat.completions.create(model="plain", messages=messages)
    assert "citations" not in (plain.model_extra or {})
    rag_messages, passages = server["state"].rag["rag"].prompt(messages)
    assert len(passages) == 3 and "Passages:\n[1] " in rag_messages[-1]["content"]
    assert rag_messages[-1]["content"].endswith(f"Question: {question}")


def test_a_rag_request_without_a_user_message_is_400(server: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError, match="answers the last user message"):
        server["client"].chat.completions.create(
            model="rag", messages=[{"role": "system", "content": "Be brief."}]
        )


def test_rag_for_an_unknown_model_or_index_stops_the_server_before_it_listens(
    tmp_path: Path,
) -> None:
    from hwkit.plugins.serving.cli import _rag

    with pytest.raises(UsageError, match="no served model is named 'other'"):
        _rag(["other=/x"], {"smol": "smollm2-135m-instruct"})
    assert _rag(["/idx"], {"a": "m", "b": "m"}) == {"a": Path("/idx"), "b": Path("/idx")}
    config = ServeConfig(models={"smol": "smollm2-135m-instruct"}, rag={"smol": tmp_path})
    with pytest.raises(Exception, match=str(tmp_path)):
        create_app(config, mock_runtime("cpu"))


def test_a_generator_failing_mid_stream_ends_that_stream_only(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2 as httpx

    state = server["state"]
    generator = state.pool.get("rag")

    def failing(prompt: Any, params: Any, result: Any = None) -> Iterator[str]:
        yield "Half"
        raise RuntimeError("device lost")

    monkeypatch.setattr(generator, "stream", failing)
    base = str(server["client"].base_url).rstrip("/")
    body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": "Who?"}]}
    with httpx.stream("POST", base + "/chat/completions", json=body, timeout=120) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert '"content": "Half"' in lines[1]
    assert lines[-1].startswith('data: {"error": {"message": "generation failed: device lost"')
    monkeypatch.undo()
    ok = server["client"].chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "Who won?"}], max_tokens=4
    )
    assert ok.choices[0].message.content
    assert httpx.get(base.removesuffix("/v1") + "/health").json()["queue"] == 0
