"""The RAG loop's decisions over a real BM25 index of squad-open paragraphs.

The generator here is scripted (a ``Generator`` whose replies a test chooses from the
prompt), so each branch of the loop (cite, refuse to invent citations, grade, rewrite,
refine, adapt) is reached on purpose; ``test_rag_cli.py`` runs the real model.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from hwkit.errors import UsageError
from hwkit.inference import GenerationParams, Generator, Message, Prompt, StreamResult
from hwkit.plugins.rag.checks import OverlapSupport, citations, sentences, strip_citations
from hwkit.plugins.rag.evaluation import read_qa, score_answer, summarize
from hwkit.plugins.rag.pipeline import RagPipeline, RagSettings
from hwkit.plugins.rag.squad import exact_match, token_f1
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.retriever import Document
from tests.plugins.rag.squad_index import squad_slice

Reply = Callable[[list[Message]], str]


class Scripted(Generator):
    """Replies from ``reply(messages)``, one word per piece; records every prompt."""

    name = "scripted"

    def __init__(self, reply: Reply, *, logprob: float | None = None) -> None:
        self.reply = reply
        self.logprob = logprob
        self.gives_logprobs = logprob is not None
        self.lock = threading.Lock()
        self.prompts: list[list[Message]] = []

    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> Prompt:
        self.prompts.append(list(messages))
        return Prompt(
            list(messages), sum(len(m["content"].split()) for m in messages), max_new_tokens
        )

    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        words = self.reply(prompt.ids).split(" ")
        if result is not None:
            result.completion_tokens = len(words)
            if params.logprobs and self.logprob is not None:
                result.logprobs = [self.logprob] * len(words)
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word


def user(messages: list[Message]) -> str:
    return messages[-1]["content"]


@pytest.fixture(scope="module")
def squad(shared_data: Path) -> Path:
    return shared_data / "squad-open"


@pytest.fixture(scope="module")
def index(squad: Path) -> BM25Retriever:
    """BM25 over the paragraphs of the first 60 test questions' articles (a real slice)."""
    return squad_slice(squad, 60)


@pytest.fixture(scope="module")
def qa(squad: Path) -> list:
    return read_qa(squad, "test", 60)


def gold_answer_reply(answer: str) -> Reply:
    """Cites the shown passage that contains ``answer`` (the first one if none does)."""

    def reply(messages: list[Message]) -> str:
        text = user(messages)
        if "Passages:" not in text:
            return answer
        lines = [ln for ln in text.splitlines() if ln.startswith("[")]
        number = next((i for i, ln in enumerate(lines, 1) if answer in ln), 1)
        return f"{answer} [{number}]"

    return reply


def test_squad_scoring_follows_the_official_normalisation() -> None:
    assert exact_match("The Denver Broncos!", ["Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert token_f1("Denver", ["Denver Broncos", "Broncos"]) == pytest.approx(2 / 3)
    assert token_f1("an apple", ["the pear"]) == 0.0


def test_citations_and_sentences_are_parsed_as_written() -> None:
    text = "Paris is the capital [2]. It has 2 million people [1][3]. Nothing cited here."
    assert citations(text) == [2, 1, 3]
    assert sentences(text) == [
        "Paris is the capital [2].",
        "It has 2 million people [1][3].",
        "Nothing cited here.",
    ]
    assert strip_citations("Denver Broncos [2]") == "Denver Broncos"
    doc = Document("d", "The capital of France is Paris.", "France")
    assert OverlapSupport().support("Paris is the capital of France [1]", doc) == 1.0
    assert OverlapSupport().support("Berlin is the capital", doc) == pytest.approx(1 / 2)


def test_plain_rag_cites_the_passage_it_used(index: BM25Retriever, qa: list) -> None:
    item = next(q for q in qa if any(len(a.split()) > 1 for a in q.answers))
    answer_text = next(a for a in item.answers if len(a.split()) > 1)
    gen = Scripted(gold_answer_reply(answer_text))
    answer = RagPipeline(index, gen, RagSettings(k=5)).ask(item.question)
    hits = index.search(item.question, k=5)
    assert [p.id for p in answer.passages] == [h.id for h in hits]
    assert answer.answer == answer_text and answer.retrieved and answer.cited
    cited = answer.citations[0]
    assert answer_text in cited.text and cited.id == hits[cited.number - 1].id
    assert answer.supported  # every content word of the answer is in the cited paragraph
    score = score_answer(answer, item)
    assert score["em"] == 1.0 and score["f1"] == 1.0
    assert score["citation_precision"] == float(cited.id in item.gold)
    steps = [t["step"] for t in answer.trace]
    assert steps == ["retrieve", "generate", "check"]


def test_an_answer_without_citations_is_reported_not_given_one(
    index: BM25Retriever, qa: list
) -> None:
    answer = RagPipeline(index, Scripted(lambda m: "Somewhere far away [7]")).ask(qa[0].question)
    assert not answer.cited and answer.invalid_citations == [7]
    assert not answer.supported and answer.sentences[0].support == 0.0
    assert answer.trace[-1]["invalid_citations"] == [7]
    uncited = RagPipeline(index, Scripted(lambda m: "Somewhere")).ask(qa[0].question)
    assert uncited.citations == [] and uncited.invalid_citations == []
    assert score_answer(uncited, qa[0])["citation_precision"] is None


class FixedGrader:
    name = "fixed"

    def __init__(self, grade: Callable[[Document], float]) -> None:
        self.grade = grade
        self.calls = 0

    def relevance(self, question: str, passages: Sequence[Document]) -> list[float]:
        self.calls += 1
        return [self.grade(p) for p in passages]


def test_no_relevant_passage_rewrites_the_query_up_to_max_rounds(
    index: BM25Retriever, qa: list
) -> None:
    def reply(messages: list[Message]) -> str:
        if "search query" in user(messages):
            return "rewritten query words"
        return "I do not know [1]"

    grader = FixedGrader(lambda p: 0.1)
    settings = RagSettings(reflect=True, max_rounds=3, candidates=10)
    pipeline = RagPipeline(index, Scripted(reply), settings, grader=grader, rate_utility=False)
    answer = pipeline.ask(qa[1].question)
    retrievals = [t for t in answer.trace if t["step"] == "retrieve"]
    assert [t["query"] for t in retrievals] == [qa[1].question] + ["rewritten query words"] * 2
    assert [t["round"] for t in answer.trace if t["step"] == "rewrite"] == [1, 2]
    assert any(t["step"] == "no_relevant_passage" for t in answer.trace)
    assert grader.calls == 3 and len(answer.passages) == settings.k


def test_a_relevant_passage_stops_the_rounds_and_orders_by_grade(
    index: BM25Retriever, qa: list
) -> None:
    item = next(q for q in qa[2:] if set(q.gold) & {h.id for h in index.search(q.question, k=20)})
    gold = next(iter(item.gold))
    grader = FixedGrader(lambda p: 0.9 if p.id == gold else 0.2)
    gen = Scripted(gold_answer_reply(item.answers[0]))
    settings = RagSettings(reflect=True, candidates=20)
    answer = RagPipeline(index, gen, settings, grader=grader, rate_utility=False).ask(item.question)
    assert grader.calls == 1 and [p.id for p in answer.passages] == [gold]
    assert answer.trace[0]["relevant"] == [gold]


def test_an_unsupported_answer_is_refined_from_single_passages(
    index: BM25Retriever, qa: list
) -> None:
    item = qa[3]

    def reply(messages: list[Message]) -> str:
        text = user(messages)
        if "How useful" in text:
            return "4"
        shown = [ln for ln in text.splitlines() if ln.startswith("[")]
        if len(shown) > 1:
            return "Invented words nowhere [1]"  # the first answer: unsupported
        words = shown[0].split(":", 1)[1].split()[:4]  # copies its single passage
        return " ".join(words) + " [1]"

    settings = RagSettings(reflect=True, k=3, max_rounds=3)
    grader = FixedGrader(lambda p: 0.8)
    answer = RagPipeline(index, Scripted(reply), settings, grader=grader).ask(item.question)
    refine = [t for t in answer.trace if t["step"] == "refine"]
    assert len(refine) == 1 and refine[0]["supported"]  # the first candidate was enough
    assert answer.supported and answer.utility == 4
    assert [p.id for p in answer.passages] == [refine[0]["passage"]]
    assert {"step": "choose", "candidate": 1} in answer.trace


def test_adaptive_retrieves_only_when_the_model_is_unsure(index: BM25Retriever, qa: list) -> None:
    settings = RagSettings(mode="adaptive", confidence=0.6)
    sure = Scripted(lambda m: "Paris", logprob=math.log(0.9))
    answer = RagPipeline(index, sure, settings).ask(qa[0].question)
    assert not answer.retrieved and answer.answer == "Paris"
    assert answer.trace[0] == {
        "step": "decide",
        "confidence": 0.9,
        "threshold": 0.6,
        "retrieve": False,
    }
    unsure = Scripted(gold_answer_reply(qa[0].answers[0]), logprob=math.log(0.3))
    answer = RagPipeline(index, unsure, settings).ask(qa[0].question)
    assert answer.retrieved and answer.trace[0]["retrieve"] is True
    with pytest.raises(UsageError, match="adaptive retrieval needs token probabilities"):
        RagPipeline(index, Scripted(lambda m: "x"), settings)


def test_never_answers_closed_book(index: BM25Retriever, qa: list) -> None:
    gen = Scripted(lambda m: "Closed book answer")
    answer = RagPipeline(index, gen, RagSettings(mode="never")).ask(qa[0].question)
    assert not answer.retrieved and answer.passages == [] and answer.sentences == []
    assert "Passages:" not in user(gen.prompts[0])
    assert score_answer(answer, qa[0])["supported"] is None


def test_streamed_pieces_make_the_answer(index: BM25Retriever, qa: list) -> None:
    pipeline = RagPipeline(index, Scripted(gold_answer_reply(qa[4].answers[0])))
    pieces, done = pipeline.stream(qa[4].question)
    text = "".join(pieces)
    assert done and done[0].text == text and done[0].cited


def test_bad_input_is_one_line(index: BM25Retriever, squad: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="the index is empty"):
        RagPipeline(BM25Retriever(), Scripted(lambda m: "x"))
    with pytest.raises(UsageError, match="the question is empty"):
        RagPipeline(index, Scripted(lambda m: "x")).ask("  ")
    with pytest.raises(UsageError, match=r"candidates \(2\) must be >= k \(3\)"):
        RagSettings(candidates=2)
    with pytest.raises(UsageError, match="mode must be one of"):
        RagSettings(mode="sometimes")  # type: ignore[arg-type]
    bad = tmp_path / "qa"
    (bad / "qrels").mkdir(parents=True)
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (bad / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "why?"}) + "\n")
    with pytest.raises(Exception, match=r"queries.jsonl:1: question 'q1' has no 'answers'"):
        read_qa(bad, "test")


def test_a_generator_failing_mid_stream_reaches_the_caller(index: BM25Retriever, qa: list) -> None:
    class Failing(Scripted):
        def stream(self, prompt, params, result=None):  # type: ignore[no-untyped-def]
            yield "Half"
            raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        RagPipeline(index, Failing(lambda m: "")).ask(qa[0].question)


def test_summary_counts_what_it_says(index: BM25Retriever, qa: list) -> None:
    items = qa[:4]
    pipeline = RagPipeline(index, Scripted(gold_answer_reply(items[0].answers[0])))
    scores = [score_answer(pipeline.ask(q.question), q) for q in items]
    summary = summarize(scores)
    assert summary["questions"] == 4
    assert summary["em"] == pytest.approx(sum(s["em"] for s in scores) / 4)
    cited = [s["citation_precision"] for s in scores if s["citation_precision"] is not None]
    assert summary["citation_precision"] == pytest.approx(sum(cited) / len(cited))
    assert summary["latency_ms"]["p95"] >= summary["latency_ms"]["p50"] > 0
