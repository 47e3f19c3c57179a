"""Retrieval-augmented answers with self-reflection, over any hwkit retriever and generator.

The loop, in the spirit of Self-RAG (Asai et al. 2023) and the corrective-RAG graphs:

1. **Retrieve or not** (``mode``): ``always``; ``never`` (closed book); ``adaptive``: the
   generator first answers alone, and retrieval runs only when it is unsure (the geometric
   mean of its tokens' probabilities below ``confidence``, as Self-RAG's threshold on its
   retrieve token); needs a runtime that gives token probabilities.
2. **Grade** each retrieved passage (``reflect``): a cross-encoder, or the generator as a
   judge. When none reaches ``relevance``, rewrite the query and retrieve again, at most
   ``max_rounds`` retrievals in all; then answer from the best-graded passages anyway
   (the trace says none was judged relevant).
3. **Generate** an answer that cites its passages as ``[1]``, ``[2]`` (optionally after a
   chain of thought). An answer without a citation is reported as uncited, never given one.
4. **Check** each sentence against the passages it cites (lexical overlap by default, or
   the generator as judge) and **rate** utility 1-5 (the generator as judge).
5. **Refine** (``reflect``): when a sentence is unsupported, answer again from each of the
   best passages alone (up to ``max_rounds - 1`` more candidates) and keep the candidate
   with the best critique (support, then relevance, then utility), as Self-RAG's
   segment-level beam picks among per-passage continuations.

Every decision and score goes into ``RagAnswer.trace``. Plain top-k RAG is ``mode=always``
without ``reflect``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hwkit.errors import UsageError
from hwkit.inference import GenerationParams, Generator, StreamResult
from hwkit.plugins.rag import prompts
from hwkit.plugins.rag.checks import (
    Grader,
    OverlapSupport,
    Supporter,
    citations,
    judge_utility,
    sentences,
    strip_citations,
)
from hwkit.retriever import Document, Retriever

Mode = Literal["always", "adaptive", "never"]
MODES: tuple[Mode, ...] = ("always", "adaptive", "never")


@dataclass(frozen=True)
class RagSettings:
    """What the loop does; the defaults are plain top-3 RAG (see docs/rag.md for why)."""

    mode: Mode = "always"
    k: int = 3  # passages shown to the generator
    candidates: int = 20  # retrieved per round (graded when reflecting)
    reflect: bool = False
    max_rounds: int = 3
    relevance: float = 0.5  # a passage graded at least this is relevant
    confidence: float = 0.6  # adaptive: retrieve below this answer confidence
    support: float = 0.6  # a sentence checked at least this is supported
    chain_of_thought: bool = False
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("k", "candidates", "max_rounds", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.candidates < self.k:
            raise UsageError(f"candidates ({self.candidates}) must be >= k ({self.k})")


@dataclass(frozen=True)
class Citation:
    number: int  # as written in the answer: [number]
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class SentenceCheck:
    text: str
    cited: list[int]
    support: float  # the best support among the passages it cites (0 when it cites none)
    supported: bool


@dataclass
class RagAnswer:
    """An answer, the passages it was given, what it cites and why it came out so."""

    question: str
    text: str  # as generated, citation markers included
    answer: str  # without the markers (and without the chain of thought)
    passages: list[Document]
    citations: list[Citation]
    invalid_citations: list[int]  # numbers with no such passage
    sentences: list[SentenceCheck]
    utility: int | None
    retrieved: bool
    seconds: float = 0.0
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cited(self) -> bool:
        return bool(self.citations)

    @property
    def supported(self) -> bool:
        """Every sentence supported by a passage it cites (False when nothing is cited)."""
        return bool(self.sentences) and all(s.supported for s in self.sentences)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "text": self.text,
            "citations": [asdict(c) for c in self.citations],
            "invalid_citations": self.invalid_citations,
            "cited": self.cited,
            "supported": self.supported,
            "sentences": [asdict(s) for s in self.sentences],
            "utility": self.utility,
            "retrieved": self.retrieved,
            "passages": [p.id for p in self.passages],
            "seconds": round(self.seconds, 4),
            "trace": self.trace,
        }


@dataclass
class _Candidate:
    answer: RagAnswer
    relevance: float

    def critique(self) -> tuple[float, float, int]:
        checks = self.answer.sentences
        support = sum(s.support for s in checks) / len(checks) if checks else 0.0
        return (support, self.relevance, self.answer.utility or 0)


class RagPipeline:
    """Answers questions from ``retriever``'s documents with ``generator``.

    ``grader`` scores passage relevance when reflecting (a cross-encoder, or
    ``JudgeGrader(generator)``); ``supporter`` checks sentences (default: lexical
    overlap); ``rate_utility`` asks the generator for a 1-5 utility when reflecting.
    """

    def __init__(
        self,
        retriever: Retriever,
        generator: Generator,
        settings: RagSettings | None = None,
        *,
        grader: Grader | None = None,
        supporter: Supporter | None = None,
        rate_utility: bool = True,
    ) -> None:
        self.retriever = retriever
        self.generator = generator
        self.settings = settings or RagSettings()
        if self.settings.reflect and grader is None:
            from hwkit.plugins.rag.checks import JudgeGrader

            grader = JudgeGrader(generator)
        if self.settings.mode == "adaptive" and not generator.gives_logprobs:
            runtime = getattr(getattr(generator, "plan", None), "runtime", None)
            raise UsageError(
                f"adaptive retrieval needs token probabilities, which the "
                f"{runtime or type(generator).__name__} runtime does not give",
                hint="use --mode always, or serve the model with the transformers runtime",
            )
        if self.settings.mode != "never" and len(retriever) == 0:
            raise UsageError(
                "the index is empty: there is nothing to answer from",
                hint="add documents with hwkit index add, or use --mode never",
            )
        self.grader = grader
        self.supporter: Supporter = supporter or OverlapSupport()
        self.rate_utility = rate_utility

    # -- the loop --------------------------------------------------------------------------
    def ask(self, question: str) -> RagAnswer:
        """The answer to ``question`` with its citations, checks and trace."""
        question = question.strip()
        if not question:
            raise UsageError("the question is empty")
        start = time.perf_counter()
        trace: list[dict[str, Any]] = []
        s = self.settings
        retrieve = s.mode == "always"
        if s.mode == "adaptive":
            closed, confidence = self._closed_book(question)
            retrieve = confidence < s.confidence
            trace.append(
                {
                    "step": "decide",
                    "confidence": round(confidence, 4),
                    "threshold": s.confidence,
                    "retrieve": retrieve,
                }
            )
            if not retrieve:
                return self._finish(self._checked(question, closed, [], trace), start)
        if not retrieve:
            text = self._generate(question, [], trace)
            return self._finish(self._checked(question, text, [], trace), start)
        passages, grades = self._retrieve(question, trace)
        text = self._generate(question, passages, trace)
        answer = self._checked(question, text, passages, trace)
        if s.reflect:
            answer = self._refine(question, answer, passages, grades, trace)
        return self._finish(answer, start)

    def stream(self, question: str) -> tuple[Iterator[str], list[RagAnswer]]:
        """The answer's text as it is generated, and a list that holds the full
        :class:`RagAnswer` once the iterator has ended. Without ``reflect`` the pieces are
        the generator's own; with it the answer is checked (and maybe refined) first and
        comes as one piece."""
        done: list[RagAnswer] = []
        s = self.settings
        if s.reflect or s.mode == "adaptive":

            def whole() -> Iterator[str]:
                answer = self.ask(question)
                done.append(answer)
                yield answer.text

            return whole(), done

        def pieces() -> Iterator[str]:
            start = time.perf_counter()
            trace: list[dict[str, Any]] = []
            q = question.strip()
            passages: list[Document] = []
            if s.mode == "always":
                passages, _ = self._retrieve(q, trace)
            messages = prompts.answer_messages(q, passages, chain_of_thought=s.chain_of_thought)
            prompt = self.generator.prompt(messages, s.max_new_tokens)
            result = StreamResult()
            parts: list[str] = []
            for piece in self.generator.stream(prompt, GenerationParams(s.max_new_tokens), result):
                parts.append(piece)
                yield piece
            text = "".join(parts)
            trace.append(
                {"step": "generate", "passages": len(passages), "tokens": result.completion_tokens}
            )
            done.append(self._finish(self._checked(q, text, passages, trace), start))

        return pieces(), done

    # -- steps -----------------------------------------------------------------------------
    def _closed_book(self, question: str) -> tuple[str, float]:
        """The generator's answer without passages, and its confidence: the geometric mean
        of its tokens' probabilities."""
        s = self.settings
        prompt = self.generator.prompt(prompts.answer_messages(question, []), s.max_new_tokens)
        result = StreamResult()
        params = GenerationParams(s.max_new_tokens, logprobs=True)
        text = "".join(self.generator.stream(prompt, params, result))
        logprobs = [x for x in (result.logprobs or []) if math.isfinite(x)]
        confidence = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
        return text, confidence

    def _retrieve(
        self, question: str, trace: list[dict[str, Any]]
    ) -> tuple[list[Document], list[float]]:
        """The passages to answer from, and their grades (empty without ``reflect``)."""
        s = self.settings
        query = question
        best: list[tuple[float, Document]] = []
        for round_ in range(1, s.max_rounds + 1):
            hits = self.retriever.search(query, k=s.candidates if s.reflect else s.k)
            docs = self.retriever.documents([h.id for h in hits])
            step: dict[str, Any] = {
                "step": "retrieve",
                "round": round_,
                "query": query,
                "hits": [{"id": h.id, "score": round(h.score, 4)} for h in hits],
            }
            trace.append(step)
            if not s.reflect:
                return docs[: s.k], []
            assert self.grader is not None
            grades = self.grader.relevance(question, docs)
            graded = sorted(zip(grades, docs, strict=True), key=lambda g: -g[0])
            relevant = [(g, d) for g, d in graded if g >= s.relevance]
            step.update(
                grader=self.grader.name,
                grades={d.id: round(g, 4) for d, g in zip(docs, grades, strict=True)},
                relevant=[d.id for _, d in relevant],
            )
            if relevant:
                chosen = relevant[: s.k]
                return [d for _, d in chosen], [g for g, _ in chosen]
            if not best or (graded and graded[0][0] > best[0][0]):
                best = graded
            if round_ < s.max_rounds:
                query = self._rewrite(question, round_, trace)
        trace.append({"step": "no_relevant_passage", "rounds": s.max_rounds})
        chosen = best[: s.k]
        return [d for _, d in chosen], [g for g, _ in chosen]

    def _rewrite(self, question: str, round_: int, trace: list[dict[str, Any]]) -> str:
        """A new search query from the generator; its content words when it gives none
        (or repeats the question), so each round searches differently."""
        from hwkit.plugins.rag.checks import content_words

        reply = self.generator.generate(
            self.generator.prompt(prompts.rewrite_messages(question), 24), GenerationParams(24)
        ).text
        query = " ".join(reply.strip().splitlines()[:1]).strip().strip('"')
        how = "generator"
        if not query or query.lower() == question.lower():
            query, how = " ".join(content_words(question)) or question, "content words"
        trace.append({"step": "rewrite", "round": round_, "query": query, "by": how})
        return query

    def _generate(
        self, question: str, passages: Sequence[Document], trace: list[dict[str, Any]]
    ) -> str:
        s = self.settings
        messages = prompts.answer_messages(question, passages, chain_of_thought=s.chain_of_thought)
        completion = self.generator.generate(
            self.generator.prompt(messages, s.max_new_tokens), GenerationParams(s.max_new_tokens)
        )
        trace.append(
            {
                "step": "generate",
                "passages": [p.id for p in passages],
                "tokens": completion.completion_tokens,
                "finish": completion.finish_reason,
            }
        )
        return completion.text

    def _checked(
        self,
        question: str,
        text: str,
        passages: Sequence[Document],
        trace: list[dict[str, Any]],
    ) -> RagAnswer:
        """Parse the citations, check each sentence against what it cites, rate utility."""
        s = self.settings
        body = text
        if s.chain_of_thought and "Answer:" in text:
            reasoning, body = text.rsplit("Answer:", 1)
            trace.append({"step": "reasoning", "text": reasoning.strip()})
        numbers = citations(body)
        valid = [n for n in numbers if 1 <= n <= len(passages)]
        invalid = [n for n in numbers if n not in valid]
        cites = [
            Citation(n, passages[n - 1].id, passages[n - 1].title, passages[n - 1].text)
            for n in valid
        ]
        checks: list[SentenceCheck] = []
        if passages:
            for sentence in sentences(body):
                own = [n for n in citations(sentence) if n in valid] or valid
                support = max(
                    (self.supporter.support(sentence, passages[n - 1]) for n in own), default=0.0
                )
                checks.append(
                    SentenceCheck(strip_citations(sentence), own, support, support >= s.support)
                )
        utility = None
        if s.reflect and self.rate_utility:
            utility = judge_utility(self.generator, question, body)
        answer = RagAnswer(
            question=question,
            text=text,
            answer=strip_citations(body),
            passages=list(passages),
            citations=cites,
            invalid_citations=invalid,
            sentences=checks,
            utility=utility,
            retrieved=bool(passages),
            trace=trace,
        )
        if passages:
            trace.append(
                {
                    "step": "check",
                    "cited": [c.id for c in cites],
                    "invalid_citations": invalid,
                    "support": [round(c.support, 4) for c in checks],
                    "supporter": self.supporter.name,
                    "supported": answer.supported,
                    "utility": utility,
                }
            )
        return answer

    def _refine(
        self,
        question: str,
        first: RagAnswer,
        passages: list[Document],
        grades: list[float],
        trace: list[dict[str, Any]],
    ) -> RagAnswer:
        """Answer again from each of the best passages alone when the first answer has an
        unsupported sentence; keep the candidate with the best critique."""
        s = self.settings
        top = max(grades, default=0.0)
        candidates = [_Candidate(first, top)]
        if not first.supported:
            for i, (passage, grade) in enumerate(
                zip(passages[: s.max_rounds - 1], grades, strict=False), start=1
            ):
                sub: list[dict[str, Any]] = []
                text = self._generate(question, [passage], sub)
                candidate = self._checked(question, text, [passage], sub)
                candidates.append(_Candidate(candidate, grade))
                trace.append(
                    {
                        "step": "refine",
                        "iteration": i,
                        "passage": passage.id,
                        "answer": candidate.answer,
                        "supported": candidate.supported,
                        "utility": candidate.utility,
                    }
                )
                if candidate.supported:
                    break
        chosen = max(candidates, key=lambda c: c.critique())
        if chosen is not candidates[0]:
            trace.append({"step": "choose", "candidate": candidates.index(chosen)})
        chosen.answer.trace = trace
        return chosen.answer

    def _finish(self, answer: RagAnswer, start: float) -> RagAnswer:
        answer.seconds = time.perf_counter() - start
        return answer
