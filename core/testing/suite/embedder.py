"""Contract tests for :class:`hwkit.embedder.Embedder`. Fixture: ``embedder``."""

from __future__ import annotations

import numpy as np

from hwkit.embedder import Embedder

TEXTS = [
    "The mitochondria is the powerhouse of the cell.",
    "A short one.",
    "Gradient checkpointing trades compute for memory by recomputing activations "
    "during the backward pass instead of storing them all.",
    "Paris is the capital of France.",
]


class EmbedderContract:
    def test_shape_dtype_norm(self, embedder: Embedder) -> None:
        vectors = embedder.embed(TEXTS)
        assert vectors.shape == (len(TEXTS), embedder.dim)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)

    def test_input_order_is_kept(self, embedder: Embedder) -> None:
        batch = embedder.embed(TEXTS, batch_size=2)
        singles = np.stack([embedder.embed([t])[0] for t in TEXTS])
        cos = np.sum(batch * singles, axis=1)
        assert np.all(cos > 0.999), cos

    def test_similar_texts_are_closer(self, embedder: Embedder) -> None:
        q = embedder.embed(["What is the capital of France?"], kind="query")[0]
        docs = embedder.embed(TEXTS, kind="document")
        assert int(np.argmax(docs @ q)) == 3

    def test_empty_input(self, embedder: Embedder) -> None:
        assert embedder.embed([]).shape == (0, embedder.dim)
