"""Embedder fine-tuning on real SciFact train pairs with the real all-MiniLM-L6-v2.

Kept small (a few steps of 8 pairs at 64 tokens): the point is that the contrastive loss
goes down, the artifact reloads, resume continues, and an out-of-memory error is survived.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from hwkit.checkpoints import MARKER
from hwkit.errors import ConfigError, NotFoundError, UsageError
from hwkit.jobs import train
from hwkit.plugins.trainers.embedder import EmbedderTrainConfig, EmbedderTrainer
from hwkit.plugins.trainers.embedder.loss import false_negative_mask, info_nce
from hwkit.plugins.trainers.embedder.pairs import Pair, load_pairs, read_beir_pairs
from hwkit.runtime import current
from hwkit.testing import mock_device, mock_runtime
from hwkit.trainer import TrainingData

pytestmark = pytest.mark.slow

SMALL = {
    "batch_size": 8,
    "max_seq_len": 64,
    "query_max_len": 32,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.0,
    "checkpoint_every": 1,
    "epochs": 2,
}


@pytest.fixture(scope="module")
def scifact(shared_data: Path) -> Path:
    return shared_data / "scifact"


@pytest.fixture(scope="module")
def pairs_file(scifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 SciFact train pairs as JSONL, plus two bad rows that must land in the rejects file."""
    pairs, _ = read_beir_pairs(scifact, "train")
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    lines = [json.dumps({"query": p.query, "positive": p.positive}) for p in pairs[:16]]
    lines.insert(3, '{"query": "no positive here"}')
    lines.insert(7, "{not json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(pairs_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """``hwkit train embedder``'s path: the core's job flow (resolve, prepare, plan, fit)."""
    out = tmp_path_factory.mktemp("run")
    config = EmbedderTrainConfig(
        data=pairs_file, eval_data=pairs_file, output_dir=out, max_steps=2, **SMALL
    )
    result = train(EmbedderTrainer(), config, runtime=current())
    return out, result


def test_beir_pairs_join_queries_and_corpus(scifact: Path) -> None:
    pairs, rejects = read_beir_pairs(scifact, "train")
    assert not rejects
    by_query = {p.query_id: p for p in pairs}
    first = by_query["0"]  # qrels/train.tsv: 0 -> 31715818
    assert first.positive_id == "31715818"
    assert first.query == "0-dimensional biomaterials lack inductive properties."
    corpus = {}
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row['title']} {row['text']}"
    assert first.positive == corpus["31715818"].strip()


def test_bad_pair_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1: field\(s\) positive"):
        load_pairs(bad, rejects_path=tmp_path / "rejects.jsonl")
    rejected = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [1, 2]
    with pytest.raises(NotFoundError, match="qrels"):
        load_pairs(tmp_path)  # a directory that is not a BEIR dataset


def test_false_negatives_are_masked_not_penalised() -> None:
    import torch

    rows = [
        Pair("q1", "d1", "q1", "d1"),
        Pair("q1", "d2", "q1", "d2"),
        Pair("q2", "d3", "q2", "d3"),
    ]
    positives = {"q1": {"d1", "d2"}, "q2": {"d3"}}
    mask = false_negative_mask(rows, positives)
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    d = q.clone()  # rows 0 and 1 both match both q1 documents
    masked = info_nce(q, d, mask, 0.05)
    unmasked = info_nce(q, d, torch.zeros_like(mask), 0.05)
    assert float(masked) < 1e-6 < float(unmasked)


def test_training_lowers_contrastive_loss_and_saves_a_loadable_model(
    trained: tuple[Path, object], pairs_file: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from hwkit.jobs import load_embedder

    cpu = mock_runtime("cpu")  # a float32 plan, whatever this machine has
    out, result = trained
    metrics = result.metrics  # type: ignore[attr-defined]
    assert result.steps == 2  # type: ignore[attr-defined]
    assert metrics["eval_loss_after"] < 0.8 * metrics["eval_loss_before"], metrics
    rejected = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejected) == [4, 8]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["job"] == "embedder-train" and plan["micro_batch"] * plan["grad_accum"] == 8

    model_dir = out / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pt"))
    texts = [json.loads(x)["query"] for x in pairs_file.read_text().splitlines()[:3]]
    tuned = load_embedder("torch", model_dir, runtime=cpu).embed(texts)
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert np.sum(tuned * reference, axis=1).min() > 1 - 1e-5
    base = load_embedder("torch", "all-minilm-l6-v2", runtime=cpu).embed(texts)
    assert np.sum(tuned * base, axis=1).max() < 0.9999  # the weights really changed


def test_resume_continues_from_the_last_checkpoint(
    trained: tuple[Path, object], pairs_file: Path, tmp_path: Path
) -> None:
    out, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    first = json.loads((run_dir / "metrics.json").read_text())["losses"]
    folder = run_dir / "checkpoints"
    checkpoints = sorted(p.name for p in folder.iterdir())
    assert checkpoints == ["checkpoint-1", "checkpoint-2"]  # keep_checkpoints=2
    assert all((folder / name / MARKER).is_file() for name in checkpoints)
    # A save torn by a kill: the next checkpoint folder, without the completeness marker.
    torn = folder / "checkpoint-3"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\0" * 10)
    config = EmbedderTrainConfig(data=pairs_file, output_dir=run_dir, max_steps=3, **SMALL)
    with pytest.raises(UsageError, match="already holds checkpoints"):
        train(EmbedderTrainer(), config, runtime=current())  # no silent restart over a run
    result = train(EmbedderTrainer(), config, runtime=current(), resume=True)
    losses = json.loads((run_dir / "metrics.json").read_text())["losses"]
    assert result.steps == 3 and len(losses) == 3 and losses[:2] == first
    # the torn folder was discarded, then step 3 was saved again completely
    assert (torn / MARKER).is_file() and (torn / "model.safetensors").stat().st_size > 10
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_out_of_memory_mid_step_is_survived_without_losing_the_step(
    scifact: Path, tmp_path: Path
) -> None:
    from hwkit.allocator import plan

    device = mock_device("cpu")
    pairs = load_pairs(scifact, split="train", limit=8)
    config = EmbedderTrainConfig(max_steps=1, micro_batch=8, **SMALL)
    trainer = EmbedderTrainer(config)
    the_plan = plan(trainer.job(config, TrainingData(pairs)), devices=[device])
    assert the_plan.micro_batch == 8
    device.inject_oom(times=1, min_batch=5)  # the full batch of 8 fails; chunks of 4 fit
    result = trainer.fit(pairs, plan=the_plan, device=device, output_dir=tmp_path)
    assert result.steps == 1 and device.oom_raised == 1 and device.cache_frees >= 1
    assert trainer.decisions[0]["old_micro_batch"] == 8
    assert trainer.decisions[0]["new_micro_batch"] == 4
    assert np.isfinite(result.metrics["train_loss_last"])
