"""The prompts of a RAG answer: the reader's (numbered passages, a cited short answer) and
the judge's (relevance, support, utility, query rewriting).

One place for them, because a reader trained by hwkit (``hwkit rag reader-data``) must see
at inference exactly the prompt it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

from hwkit.inference import Message
from hwkit.retriever import Document

ANSWER_SYSTEM = (
    "Answer the question using only the numbered passages. Reply with a short answer "
    "followed by the number of the passage it comes from, like: Paris [2]."
)
COT_SYSTEM = (
    "Answer the question using only the numbered passages. First think step by step in one "
    "or two sentences, then write 'Answer:' and a short answer followed by the number of the "
    "passage it comes from, like: Answer: Paris [2]."
)
CLOSED_BOOK_SYSTEM = "Answer the question with a short answer."
PASSAGE_CHARS = 1200  # a passage longer than this is cut (SQuAD paragraphs: 99% are shorter)


def passage_block(passages: Sequence[Document]) -> str:
    """``[1] Title: text`` lines, numbered from 1 in the given order."""
    lines = []
    for number, doc in enumerate(passages, start=1):
        text = _passage(doc)
        lines.append(f"[{number}] {doc.title}: {text}" if doc.title else f"[{number}] {text}")
    return "\n".join(lines)


def answer_messages(
    question: str, passages: Sequence[Document], *, chain_of_thought: bool = False
) -> list[Message]:
    """The reader's prompt: the passages then the question (closed-book without passages)."""
    if not passages:
        return [
            {"role": "system", "content": CLOSED_BOOK_SYSTEM},
            {"role": "user", "content": question.strip()},
        ]
    system = COT_SYSTEM if chain_of_thought else ANSWER_SYSTEM
    user = f"Passages:\n{passage_block(passages)}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_target(answer: str, citation: int | None) -> str:
    """What a trained reader should reply: the short answer and its passage number."""
    return f"{answer.strip()} [{citation}]" if citation is not None else answer.strip()


def _passage(passage: Document) -> str:
    return " ".join(passage.text.split())[:PASSAGE_CHARS]


def _ask(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]


def relevance_messages(question: str, passage: Document) -> list[Message]:
    return _ask(
        f"Passage: {_passage(passage)}\n\nQuestion: {question.strip()}\n\n"
        "Does the passage contain the answer to the question? Reply yes or no."
    )


def support_messages(sentence: str, passage: Document) -> list[Message]:
    return _ask(
        f"Passage: {_passage(passage)}\n\nStatement: {sentence.strip()}\n\n"
        "Is the statement supported by the passage? Reply yes or no."
    )


def utility_messages(question: str, answer: str) -> list[Message]:
    return _ask(
        f"Question: {question.strip()}\nAnswer: {answer.strip()}\n\n"
        "How useful is the answer to the question, from 1 (useless) to 5 (complete)? "
        "Reply with one digit."
    )


def rewrite_messages(question: str) -> list[Message]:
    return _ask(
        "Rewrite the question as a short search query with its key words.\n"
        f"Question: {question.strip()}\nQuery:"
    )
