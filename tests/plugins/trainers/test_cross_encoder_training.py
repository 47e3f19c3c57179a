"""Cross-encoder (reranker) training on a real SciFact slice with the real all-MiniLM-L6-v2.

Kept small (8 listwise steps of 4 groups at 48 tokens, the session's ``tiny_cross_encoder``
run, shared with the rerank retriever's conformance run): the point is that the loss goes
down, the run directory holds a model ``RerankRetriever`` and sentence-transformers load,
resume continues from the last complete checkpoint, and bad input is a one-line error.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hwkit.checkpoints import MARKER
from hwkit.errors import EXIT_CONFIG, EXIT_NOT_FOUND, ConfigError, NotFoundError, UsageError
from hwkit.plugins.trainers.cross_encoder import BeirSource
from hwkit.plugins.trainers.cross_encoder.evaluation import mean_ndcg, ndcg_at
from hwkit.plugins.trainers.cross_encoder.loss import batch_loss
from tests.cross_encoder_kit import ORPHAN_DOC, TINY, scifact_slice, train_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scifact_slice(shared_data / "scifact", tmp_path_factory.mktemp("slice"))


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_bce_is_binary_cross_entropy_with_the_positive_weighted_by_the_negatives() -> None:
    import torch

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(2.0))(logits, labels)
    assert torch.allclose(batch_loss(logits, "bce"), reference)
    listwise = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(batch_loss(logits, "listwise"), listwise)


def test_ndcg_at_10_counts_every_judged_document_in_the_ideal_ranking() -> None:
    judged = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "x"], judged) == pytest.approx(1.0)
    # b retrieved at rank 2 only: DCG 1/log2(3), ideal 1 + 1/log2(3)
    expected = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert ndcg_at(["x", "b"], judged) == pytest.approx(expected)
    assert mean_ndcg({"q1": ["a"]}, {"q1": {"a": 1}, "q2": {"c": 1}}) == pytest.approx(0.5)


def test_training_lowers_the_loss_and_leaves_a_rerank_model(tiny_cross_encoder: Path) -> None:
    from sentence_transformers import CrossEncoder

    from hwkit.plugins.retrievers.rerank import RerankRetriever
    from hwkit.retriever import Document
    from hwkit.testing import mock_runtime

    run = tiny_cross_encoder
    result = json.loads((run / "result.json").read_text())
    metrics = result["metrics"]
    assert result["trainer"] == "cross-encoder" and result["steps"] == TINY["max_steps"]
    assert metrics["probe_loss_after"] < 0.9 * metrics["probe_loss_before"], metrics
    assert 0.0 <= metrics["eval_ndcg@10_bm25"] <= 1.0 and 0.0 <= metrics["eval_ndcg@10"] <= 1.0
    saved = json.loads((run / "metrics.json").read_text())
    assert len(saved["losses"]) == TINY["max_steps"] and all(np.isfinite(saved["losses"]))
    plan = json.loads((run / "plan.json").read_text())
    assert plan["job"] == "cross-encoder-train" and plan["micro_batch"] * plan["grad_accum"] == 12
    assert "listwise" in (run / "config.toml").read_text()
    # the query whose only relevant document is not in the corpus was counted and skipped
    report = json.loads((run / "report.json").read_text())
    (dataset,) = report["datasets"]
    assert dataset["skipped_no_relevant_document"] == 1 and dataset["queries_used"] == 12
    assert len((run / "train.jsonl").read_text().splitlines()) == report["groups"]

    model = run / "model"
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    assert not list(model.glob("*.bin")) and not list(model.glob("*.pt"))
    config = json.loads((model / "config.json").read_text())
    assert len(config["id2label"]) == 1  # one logit: the relevance score

    # RerankRetriever takes the run directory; its scores are sentence-transformers' own.
    docs = [
        Document("d1", "Photosynthesis converts light energy into chemical energy in plants."),
        Document("d6", "Chlorophyll absorbs light most strongly in the blue and red wavelengths."),
        Document("d3", "Insulin regulates blood glucose levels in the human body."),
    ]
    rr = RerankRetriever(run, runtime=mock_runtime("cpu"))
    assert rr.model_path == model
    rr.index(docs)
    query = "chlorophyll absorbs blue and red light"
    hits = rr.search(query, 3)
    reference = CrossEncoder(str(model), local_files_only=True, activation_fn=_identity())
    text = {d.id: d.text for d in docs}
    expected = reference.predict([(query, text[h.id]) for h in hits])
    assert np.allclose([h.score for h in hits], expected, atol=1e-4)


def _identity() -> object:
    import torch

    return torch.nn.Identity()


def test_resume_continues_from_the_last_complete_checkpoint(
    tiny_cross_encoder: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_cross_encoder, run)
    first = json.loads((run / "metrics.json").read_text())["losses"]
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    torn = folder / "checkpoint-9"  # a save killed half-way: no completeness marker
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 10)
    # The sources are gone: a resumed run trains on the groups it wrote (train.jsonl).
    gone = tmp_path / "moved-away"
    with pytest.raises(UsageError, match="already holds checkpoints"):
        train_tiny(gone, run, max_steps=9, eval_data=None)  # no silent restart over a run
    result = train_tiny(gone, run, max_steps=9, eval_data=None, resume=True)
    losses = json.loads((run / "metrics.json").read_text())["losses"]
    assert result.steps == 9 and len(losses) == 9 and losses[:8] == first
    assert "probe_loss_before" not in result.metrics  # measured by the first run only
    assert (torn / MARKER).is_file() and (torn / "model.safetensors").stat().st_size > 10
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-8", "checkpoint-9"]


def test_a_split_without_qrels_is_a_one_line_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as exc:
        train_tiny(data, tmp_path / "run", data=[BeirSource(path=data, split="dev")])
    line = _one_line(exc)
    assert str(data / "qrels" / "dev.tsv") in line and "splits here: test, train" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nothing_usable_is_a_one_line_error_naming_the_qrels(data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    qrels = broken / "qrels" / "train.tsv"
    rows = qrels.read_text().splitlines()
    qrels.write_text(
        "\n".join([rows[0], *(r.rsplit("\t", 2)[0] + f"\t{ORPHAN_DOC}\t1" for r in rows[1:])])
        + "\n"
    )
    with pytest.raises(ConfigError) as exc:
        train_tiny(broken, tmp_path / "run")
    line = _one_line(exc)
    assert f"no usable training queries: {qrels}" in line
    assert f"{len(rows) - 1} judged, {len(rows) - 1} without a relevant document" in line


def test_the_cli_reports_bad_input_on_one_line(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from hwkit.cli import main

    config = tmp_path / "ce.toml"
    config.write_text(f'[[data]]\npath = "{data}"\nsplit = "dev"\n', encoding="utf-8")
    monkeypatch.setattr(
        sys, "argv", ["hwkit", "train", "cross-encoder", str(config), "--out", str(tmp_path / "r")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == EXIT_NOT_FOUND
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "qrels/dev.tsv not found" in line
    config.write_text("negatives = 0\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == EXIT_CONFIG
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "field 'negatives'" in line
