"""Contract tests for :class:`hwkit.retriever.Retriever`.

Fixture: ``retriever_factory``, a callable returning a fresh, empty retriever.
Optional features are tested by the capability flags the class declares
(``supports_add``): a retriever that supports a feature must do it right, one that does
not must refuse it with a UsageError.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hwkit.errors import NotFoundError, UsageError
from hwkit.retriever import Document, Hit, Retriever

DOCS = [
    Document("d1", "Photosynthesis converts light energy into chemical energy in plants."),
    Document("d2", "The stock market fell sharply after the interest rate announcement."),
    Document("d3", "Insulin regulates blood glucose levels in the human body."),
    Document("d4", "Volcanic eruptions release ash and sulfur dioxide into the atmosphere."),
    Document("d5", "Neural networks learn representations through gradient descent."),
    Document("d6", "Chlorophyll absorbs light most strongly in the blue and red wavelengths."),
]
BY_ID = {d.id: d for d in DOCS}
INSULIN = "how does insulin control blood glucose"

Factory = Callable[[], Retriever]


class RetrieverContract:
    def _built(self, retriever_factory: Factory) -> Retriever:
        retriever = retriever_factory()
        retriever.index(DOCS)
        return retriever

    def test_len(self, retriever_factory: Factory) -> None:
        assert len(self._built(retriever_factory)) == len(DOCS)

    def test_search_ranks_and_limits(self, retriever_factory: Factory) -> None:
        hits = self._built(retriever_factory).search(INSULIN, k=3)
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
        assert [d.text for d in loaded.documents(["d6", "d1"])] == [
            BY_ID["d6"].text,
            BY_ID["d1"].text,
        ]

    def test_documents_give_the_indexed_text_of_hits_in_order(
        self, retriever_factory: Factory
    ) -> None:
        retriever = self._built(retriever_factory)
        ids = [h.id for h in retriever.search(INSULIN, k=3)]
        docs = retriever.documents(ids)
        assert all(isinstance(d, Document) for d in docs)
        assert [d.id for d in docs] == ids
        assert [(d.text, d.title) for d in docs] == [(BY_ID[i].text, BY_ID[i].title) for i in ids]
        backwards = list(reversed(ids))
        assert [d.id for d in retriever.documents(backwards)] == backwards
        assert retriever.documents([]) == []

    def test_documents_refuse_an_unknown_id(self, retriever_factory: Factory) -> None:
        retriever = self._built(retriever_factory)
        with pytest.raises(NotFoundError):
            retriever.documents(["d3", "no-such-document"])

    def test_add_keeps_old_documents_and_finds_new_ones(self, retriever_factory: Factory) -> None:
        retriever = retriever_factory()
        if not retriever.supports_add:
            pytest.skip(f"{type(retriever).__name__} does not declare supports_add")
        retriever.index(DOCS[:4])
        retriever.add(DOCS[4:])
        assert len(retriever) == len(DOCS)
        assert retriever.search(INSULIN, k=1)[0].id == "d3"  # indexed before
        assert retriever.search("gradient descent in neural networks", k=1)[0].id == "d5"
        assert retriever.search("chlorophyll absorbs blue and red light", k=1)[0].id == "d6"
        assert [d.text for d in retriever.documents(["d6", "d1"])] == [
            BY_ID["d6"].text,
            BY_ID["d1"].text,
        ]

    def test_add_without_support_is_refused(self, retriever_factory: Factory) -> None:
        retriever = retriever_factory()
        if retriever.supports_add:
            pytest.skip(f"{type(retriever).__name__} supports add")
        retriever.index(DOCS[:4])
        with pytest.raises(UsageError):
            retriever.add(DOCS[4:])
        assert len(retriever) == 4
        assert retriever.search(INSULIN, k=1)[0].id == "d3"
