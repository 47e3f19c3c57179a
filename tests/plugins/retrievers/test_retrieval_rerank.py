"""Cross-encoder reranking with a locally built sequence classifier.

No pretrained cross-encoder is available offline, so the model is all-MiniLM-L6-v2's
encoder with a seeded, randomly initialised one-logit head, saved to a temp dir. The
test checks the mechanics (candidates, order, persistence) against sentence-transformers'
own CrossEncoder on the same directory, not ranking quality. A cross-encoder trained by
``hwkit train cross-encoder`` is tested in tests/plugins/trainers/test_cross_encoder_training.py
and runs the conformance kit (tests/core/testing/test_conformance.py).
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from hwkit.errors import NotFoundError
from hwkit.plugins.retrievers.bm25 import BM25Retriever
from hwkit.plugins.retrievers.rerank import RerankRetriever
from hwkit.retriever import Document


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hwkit.models import resolve_model

    torch.manual_seed(0)
    src = resolve_model("all-minilm-l6-v2")
    out = tmp_path_factory.mktemp("cross_encoder")
    model = AutoModelForSequenceClassification.from_pretrained(
        str(src), num_labels=1, local_files_only=True
    )
    model.save_pretrained(out)  # safetensors by default
    AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> list[Document]:
    with (shared_data / "scifact" / "corpus.jsonl").open() as fh:
        rows = [json.loads(line) for _, line in zip(range(300), fh, strict=False)]
    return [Document(r["_id"], r["text"], r["title"]) for r in rows]


def test_rerank_reorders_first_stage_like_sentence_transformers(
    tmp_path: Path, cross_encoder_dir: Path, corpus: list[Document]
) -> None:
    from sentence_transformers import CrossEncoder

    query = "white matter development in newborn brains"
    from hwkit.testing import mock_runtime

    # Planned on a mock CPU: float32, as the reference is, whatever this machine's CPU is.
    rr = RerankRetriever(cross_encoder_dir, top_n=20, max_length=256, runtime=mock_runtime("cpu"))
    rr.index(corpus)
    first = rr.first_stage.search(query, 20)
    hits = rr.search(query, 20)
    assert {h.id for h in hits} == {h.id for h in first}  # same candidates, new order
    assert all(a.score >= b.score for a, b in pairwise(hits))

    texts = {d.id: f"{d.title} {d.text}" for d in corpus}
    reference = CrossEncoder(
        str(cross_encoder_dir),
        local_files_only=True,
        max_length=256,
        activation_fn=torch_identity(),
    )
    expected = reference.predict([(query, texts[h.id]) for h in first])
    assert np.allclose(sorted(expected, reverse=True), [h.score for h in hits], atol=1e-4)
    assert [h.id for h in hits][:5] == [first[i].id for i in np.argsort(-expected, kind="stable")][
        :5
    ]

    # The cross-encoder was loaded through a rerank plan, on its device in its dtype.
    assert rr.plan is not None and rr.plan.job == "rerank" and rr.device is not None
    assert rr.device.id == rr.plan.device
    assert {str(p.dtype) for p in rr._model.parameters()} == {f"torch.{rr.plan.dtype}"}

    rr.save(tmp_path / "idx")
    loaded = RerankRetriever.load(tmp_path / "idx", runtime=rr.runtime)
    assert isinstance(loaded.first_stage, BM25Retriever)
    assert [h.id for h in loaded.search(query, 10)] == [h.id for h in hits[:10]]


def torch_identity() -> object:
    import torch

    return torch.nn.Identity()


@pytest.mark.parametrize(
    ("profile", "device_id", "dtype"),
    [("rtx5090", "cuda:0", "bfloat16"), ("arc-meteor-lake", "xpu:0", "float16")],
)
def test_the_cross_encoder_runs_where_its_rerank_plan_puts_it(
    cross_encoder_dir: Path, corpus: list[Document], profile: str, device_id: str, dtype: str
) -> None:
    import torch

    from hwkit.testing import MockDevice, mock_runtime

    rr = RerankRetriever(cross_encoder_dir, top_n=10, runtime=mock_runtime(profile))
    rr.index(corpus[:50])
    hits = rr.search("white matter development in newborn brains", 5)
    assert len(hits) == 5 and all(a.score >= b.score for a, b in pairwise(hits))
    assert isinstance(rr.device, MockDevice) and rr.device.id == device_id
    assert rr.plan is not None and rr.plan.job == "rerank" and rr.plan.dtype == dtype
    assert {p.dtype for p in rr._model.parameters()} == {getattr(torch, dtype)}
    rr.device.inject_oom(times=1)  # the pairs are scored through that device
    with pytest.raises(torch.OutOfMemoryError):
        rr.search("white matter", 5)


def test_rerank_needs_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="cross-encoder model directory not found"):
        RerankRetriever(tmp_path / "missing")


def test_a_cross_encoder_training_run_directory_is_a_model(
    tmp_path: Path, cross_encoder_dir: Path
) -> None:
    import shutil

    run = tmp_path / "run"  # what `hwkit train cross-encoder` leaves: RUN/model/config.json
    shutil.copytree(cross_encoder_dir, run / "model")
    (run / "config.toml").write_text('loss = "bce"\n', encoding="utf-8")
    rr = RerankRetriever(run)
    assert rr.model_path == run / "model" and rr.options()["model"] == str(run / "model")
    assert RerankRetriever(cross_encoder_dir).model_path == cross_encoder_dir
    with pytest.raises(NotFoundError, match="hwkit train cross-encoder"):
        RerankRetriever(tmp_path)  # neither a model nor a run
