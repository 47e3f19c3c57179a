"""The critics of a RAG answer: passage relevance, sentence support, answer utility.

Each is a small class with one method, so the pipeline can take a cross-encoder, the
generator as a judge, or a lexical check for each role, and a test can hand in its own.
Scores are in [0, 1] (utility: 1-5, None when the judge gave no digit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hwkit.inference import GenerationParams, Generator, Message, StreamResult
from hwkit.plugins.rag import prompts
from hwkit.plugins.rag.squad import normalize
from hwkit.retriever import Document

if TYPE_CHECKING:
    from hwkit.plugins.retrievers.rerank import RerankRetriever
    from hwkit.runtime import Runtime

# Words that say nothing about support: a sentence is supported by its content words.
_STOPWORDS = """a an the of in on at to for from by with and or but is are was were be been
being it its this that these those as which who whom whose what when where why how than then
there their they them he she his her him i you we our your not no do does did has have had will
would can could should may might also into about over after before during"""
STOPWORDS = frozenset(_STOPWORDS.split())
_CITATION = re.compile(r"\[(\d+)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


class Grader(Protocol):
    """How relevant each passage is to the question, in [0, 1]."""

    name: str

    def relevance(self, question: str, passages: Sequence[Document]) -> list[float]: ...


class Supporter(Protocol):
    """How well ``passage`` supports ``sentence``, in [0, 1]."""

    name: str

    def support(self, sentence: str, passage: Document) -> float: ...


def citations(text: str) -> list[int]:
    """The passage numbers cited as ``[n]``, in order of first appearance."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        number = int(match.group(1))
        if number not in seen:
            seen.append(number)
    return seen


def strip_citations(text: str) -> str:
    return " ".join(_CITATION.sub(" ", text).split()).strip(" ,;")


def sentences(text: str) -> list[str]:
    """The answer's sentences (a citation after the full stop stays with its sentence)."""
    text = re.sub(r"([.!?])\s*(\[\d+\](?:\s*\[\d+\])*)", r"\2\1", text.strip())
    return [s.strip() for s in _SENTENCE.split(text) if strip_citations(s)]


def content_words(text: str) -> list[str]:
    return [w for w in normalize(strip_citations(text)).split() if w not in STOPWORDS]


class OverlapSupport:
    """Share of a sentence's content words that the passage contains: cheap and
    deterministic, the default critic (a 135M model judges support no better than chance)."""

    name = "overlap"

    def support(self, sentence: str, passage: Document) -> float:
        words = content_words(sentence)
        if not words:
            return 0.0
        have = set(normalize(f"{passage.title} {passage.text}").split())
        return sum(w in have for w in words) / len(words)


class CrossEncoderGrader:
    """A cross-encoder's score of (question, passage), squashed by a sigmoid: hwkit's own
    ``cross-encoder`` runs are trained with a binary target, so 0.5 is their boundary."""

    name = "cross-encoder"

    def __init__(self, model: str | Path, *, runtime: Runtime | None = None) -> None:
        from hwkit.plugins.retrievers.rerank import RerankRetriever

        self.reranker: RerankRetriever = RerankRetriever(model, runtime=runtime)

    def relevance(self, question: str, passages: Sequence[Document]) -> list[float]:
        from hwkit.plugins.retrievers.documents import join_content

        texts = [join_content(p.title, p.text) for p in passages]
        scores = self.reranker.score_pairs(question, texts)
        return [1.0 / (1.0 + math.exp(-float(s))) for s in scores]


class JudgeGrader:
    """The generator asked whether each passage answers the question: p(yes) when the
    runtime gives token probabilities, else 1 or 0 from the reply's first word."""

    name = "judge"

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def relevance(self, question: str, passages: Sequence[Document]) -> list[float]:
        return [
            yes_probability(self.generator, prompts.relevance_messages(question, p))
            for p in passages
        ]


class JudgeSupport:
    """The generator asked whether the passage supports the sentence."""

    name = "judge"

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def support(self, sentence: str, passage: Document) -> float:
        return yes_probability(
            self.generator, prompts.support_messages(strip_citations(sentence), passage)
        )


def yes_probability(generator: Generator, messages: list[Message]) -> float:
    """How sure the generator is that the answer is yes: the first token's probability
    when it says yes (1 - it when it says no), else 1.0 or 0.0 from the text."""
    result = StreamResult()
    params = GenerationParams(max_new_tokens=2, logprobs=generator.gives_logprobs)
    text = "".join(generator.stream(generator.prompt(messages, 2), params, result))
    says_yes = text.strip().lower().startswith("yes")
    if result.logprobs:
        p = math.exp(result.logprobs[0])
        return p if says_yes else 1.0 - p
    return 1.0 if says_yes else 0.0


def judge_utility(generator: Generator, question: str, answer: str) -> int | None:
    """Self-RAG's utility token as a question to the generator: a digit from 1 to 5."""
    messages = prompts.utility_messages(question, strip_citations(answer))
    text = generator.generate(generator.prompt(messages, 3), GenerationParams(3)).text
    digit = re.search(r"[1-5]", text)
    return int(digit.group(0)) if digit else None
