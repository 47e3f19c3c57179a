"""A BM25 index over the squad-open paragraphs of the articles of the first test questions:
real text, small enough to build in a second."""

from __future__ import annotations

from pathlib import Path

from hwkit.plugins.rag.evaluation import read_qa
from hwkit.plugins.retrievers.bm25 import BM25Retriever


def squad_slice(squad: Path, questions: int) -> BM25Retriever:
    from hwkit.plugins.retrievers.documents import read_corpus

    docs, _ = read_corpus(squad / "corpus.jsonl")
    articles = {d.split("p")[0] for qa in read_qa(squad, "test", questions) for d in qa.gold}
    r = BM25Retriever()
    r.index([d for d in docs if d.id.split("p")[0] in articles])
    return r


def saved_squad_slice(squad: Path, questions: int, path: Path) -> Path:
    squad_slice(squad, questions).save(path)
    return path
