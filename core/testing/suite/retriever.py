"""Contract tests for :class:`hwkit.retriever.Retriever`.

Fixture: ``retriever_factory``, a callable returning a fresh, empty retriever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hwkit.retriever import Document, Hit, Retriever

DOCS = [
    Document("d1", "Photosynthesis converts light energy into chemical energy in plants."),
    Document("d2", "The stock market fell sharply after the interest rate announcement."),
    Document("d3", "Insulin regulates blood glucose levels in the human body."),
    Document("d4", "Volcanic eruptions release ash and sulfur dioxide into the atmosphere."),
    Document("d5", "Neural networks learn representations through gradient descent."),
    Document("d6", "Chlorophyll absorbs light most strongly in the blue and red wavelengths."),
]

Factory = Callable[[], Retriever]


class RetrieverContract:
    def _built(self, retriever_factory: Factory) -> Retriever:
        retriever = retriever_factory()
        retriever.index(DOCS)
        return retriever

    def test_len(self, retriever_factory: Factory) -> None:
        assert len(self._built(retriever_factory)) == len(DOCS)

    def test_search_ranks_and_limits(self, retriever_factory: Factory) -> None:
        hits = self._built(retriever_factory).search("how does insulin control blood glucose", k=3)
        assert 0 < len(hits) <= 3
        assert all(isinstance(h, Hit) for h in hits)
        assert hits[0].id == "d3"
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert len({h.id for h in hits}) == len(hits)

    def test_k_above_corpus_size(self, retriever_factory: Factory) -> None:
        hits = self._built(retriever_factory).search("light energy in plants", k=50)
        assert len(hits) <= len(DOCS)

    def test_batch_matches_single(self, retriever_factory: Factory) -> None:
        retriever = self._built(retriever_factory)
        queries = ["volcano ash", "gradient descent in neural networks"]
        batch = retriever.search_batch(queries, k=2)
        assert [[h.id for h in hits] for hits in batch] == [
            [h.id for h in retriever.search(q, k=2)] for q in queries
        ]

    def test_save_load_round_trip(self, retriever_factory: Factory, tmp_path: Path) -> None:
        retriever = self._built(retriever_factory)
        retriever.save(tmp_path / "index")
        loaded = type(retriever).load(tmp_path / "index")
        query = "chlorophyll absorbs blue light"
        assert [h.id for h in loaded.search(query, k=3)] == [
            h.id for h in retriever.search(query, k=3)
        ]
        assert len(loaded) == len(retriever)
