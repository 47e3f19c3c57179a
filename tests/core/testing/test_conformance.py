"""Run hwkit's conformance kit over every registered plugin on the mock CPU device.

The same classes run for a third party with ``pytest --pyargs hwkit.testing.suite``.
The rerank retriever needs a cross-encoder: ``$HWKIT_RERANK_MODEL`` when it is set, else
the session's tiny cross-encoder, trained by ``hwkit train cross-encoder``'s trainer.
"""

from __future__ import annotations

import os

import pytest

from hwkit.plugins.retrievers.rerank import RERANK_MODEL_ENV, RerankRetriever
from hwkit.testing.suite.test_registered import (  # noqa: F401 - collected by pytest
    TestRegisteredBackends,
    TestRegisteredDevices,
    TestRegisteredEmbedders,
    TestRegisteredExporters,
    TestRegisteredRetrievers,
    TestRegisteredRuntimes,
    TestRegisteredTrainers,
)


@pytest.fixture(autouse=True)
def _rerank_model(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``$HWKIT_RERANK_MODEL`` at a trained cross-encoder for the rerank retriever's
    run of the kit (trained only when that run is collected and no model is set)."""
    if "hwkit_registered" not in request.fixturenames or os.environ.get(RERANK_MODEL_ENV):
        return
    if request.getfixturevalue("hwkit_registered") is not RerankRetriever:
        return
    monkeypatch.setenv(RERANK_MODEL_ENV, str(request.getfixturevalue("tiny_cross_encoder")))
