"""Full INT8 (``nncf.quantize``) OpenVINO embedder: agreement, real INT8, cache key, calibration.

One small calibration set (16 SciFact abstracts) keeps the quantisation to seconds; the
SciFact nDCG@10 of a corpus-calibrated embedder is in docs/embedders.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hwkit.errors import UsageError
from hwkit.jobs import load_embedder
from hwkit.plugins.embedders import calibration, ir_cache, openvino_convert
from hwkit.plugins.embedders.openvino_convert import IRConverter
from hwkit.plugins.embedders.openvino_embedder import OpenVINOEmbedder
from hwkit.testing import mock_runtime

pytestmark = pytest.mark.slow
pytest.importorskip("nncf")


def _scifact(shared_data: Path, start: int, n: int) -> list[str]:
    with (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(start + n), fh, strict=False)]
    return [f"{r['title']} {r['text']}" for r in rows[start:]]


@pytest.fixture(scope="module")
def docs(shared_data: Path) -> list[str]:
    """8 abstracts to embed (several over 256 tokens) and 2 short claims."""
    return [*_scifact(shared_data, 0, 8), "Vitamin D deficiency causes depression.", "Aspirin."]


@pytest.fixture(scope="module")
def calib(shared_data: Path) -> list[str]:
    """16 other abstracts of the same corpus: the calibration set."""
    return _scifact(shared_data, 100, 16)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-int8-cache")


def openvino(**options: Any) -> OpenVINOEmbedder:
    """Planned on a mock CPU: a float32 plan whatever this machine's CPU is."""
    emb = load_embedder("openvino", runtime=mock_runtime("cpu"), **options)
    assert isinstance(emb, OpenVINOEmbedder)
    return emb


@pytest.fixture(scope="module")
def full(cache: Path, calib: list[str]) -> OpenVINOEmbedder:
    return openvino(cache_dir=cache, int8="full", calibration_texts=calib, batch_size=4)


def test_full_int8_agrees_with_torch(full: OpenVINOEmbedder, docs: list[str]) -> None:
    reference = load_embedder("torch", runtime=mock_runtime("cpu"), batch_size=4).embed(docs)
    vectors = full.embed(docs)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Measured 0.992-0.995 on the abstracts, 0.987 on the one-word claim: margin for other
    # CPUs' INT8 kernels.
    assert np.sum(vectors * reference, axis=1).min() >= 0.98


def test_full_int8_ir_quantises_activations(full: OpenVINOEmbedder, docs: list[str]) -> None:
    ops = list(full._ov_model.get_ops())
    fake_quantize = [op for op in ops if op.get_type_name() == "FakeQuantize"]
    # Activations: a FakeQuantize in front of every Linear layer's input (6 layers x 4).
    into_matmul = {
        t.get_node().get_type_name()
        for op in fake_quantize
        for t in op.output(0).get_target_inputs()
    }
    assert len(fake_quantize) >= 24 and "MatMul" in into_matmul
    weights = {
        op.get_output_element_type(0).get_type_name()
        for op in ops
        if op.get_type_name() == "Constant"
    }
    assert "i8" in weights  # weights stored as INT8
    assert full.meta["int8_mode"] == "full" and full.meta["calibration"]["texts"] == 16
    # ... and the CPU plugin really executes the Linear layers in INT8.
    full.embed(docs[:2])
    runtime = full.compiled("document").get_runtime_model()
    precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runtime.get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
    }
    assert precisions & {"u8", "i8"}, precisions


def test_cache_key_has_mode_and_calibration(full: OpenVINOEmbedder, cache: Path) -> None:
    keys = {mode: full.converter.key(mode) for mode in (None, "weights", "full")}
    assert len(set(keys.values())) == 3 and full.ir_dir.name == keys["full"]
    # FP32 and weight-only keep the option form they had before "full" existed.
    legacy = {"pooling": full.config.pooling, "normalize": True}
    assert keys[None] == ir_cache.cache_key(full.model_path, {**legacy, "int8": False})
    assert keys["weights"] == ir_cache.cache_key(full.model_path, {**legacy, "int8": True})
    other = copy.copy(full.converter)
    other.calibration_texts = [*full.calibration_texts[:-1], "another calibration text"]
    assert other.key("full") != keys["full"]
    before = IRConverter.conversions
    again = openvino(
        cache_dir=cache, int8="full", calibration_texts=list(full.calibration_texts), batch_size=4
    )
    assert again.converted is False and IRConverter.conversions == before
    assert again.ir_dir == full.ir_dir


def test_calibration_inputs_are_tokenised_like_embed(
    full: OpenVINOEmbedder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[dict[str, np.ndarray]]] = []

    def spy(model: Any, items: list[dict[str, np.ndarray]]) -> Any:
        seen.append(items)
        return model  # the FP32 graph: what nncf is fed is what this test checks

    monkeypatch.setattr(openvino_convert, "quantize_int8", spy)
    texts = ["A short claim.", "Protein folding " * 300, "  ", "Third text"]
    emb = openvino(cache_dir=cache, int8="full", calibration_texts=texts, batch_size=4)
    try:
        (items,) = seen
        assert len(items) == 3  # the blank text is dropped
        tok = emb.tokenizer
        expected = {
            tuple(tok(t, truncation=True, max_length=emb.max_length)["input_ids"])
            for t in ("A short claim.", "Protein folding " * 300, "Third text")
        }
        assert {tuple(item["input_ids"][0]) for item in items} == expected
        for item in items:
            assert set(item) == set(full.input_names)
            assert all(a.dtype == np.int64 and a.shape[0] == 1 for a in item.values())
            assert item["attention_mask"].all()  # one text per item: no padding
    finally:
        import shutil

        shutil.rmtree(emb.ir_dir, ignore_errors=True)  # an FP32 graph under a "full" key


def test_calibration_texts_are_required_and_checked(cache: Path) -> None:
    before = IRConverter.conversions
    for bad, match in (
        ([], "needs calibration texts"),
        (["", " \n"], "needs calibration texts"),
        ("one string", "single string"),
        ([1, 2], "not str"),
    ):
        with pytest.raises(UsageError, match=match):
            openvino(cache_dir=cache, int8="full", calibration_texts=bad)
    with pytest.raises(UsageError, match="'weights' or 'full'"):
        openvino(cache_dir=cache, int8="int4")
    assert IRConverter.conversions == before


def test_bundled_texts_and_seeded_sample() -> None:
    bundled = calibration.bundled_texts()
    assert len(bundled) >= 200 and len(set(bundled)) == len(bundled)
    assert min(len(t) for t in bundled) > 5 and max(len(t.split()) for t in bundled) > 60
    corpus = [f"doc {i}" for i in range(1000)]
    picked = calibration.sample(corpus)
    assert len(picked) == calibration.CALIBRATION_SIZE == 300
    assert picked == calibration.sample(corpus) and picked != calibration.sample(corpus, seed=1)
    assert picked == sorted(picked, key=corpus.index)  # input order kept
    assert len(calibration.check_texts(corpus)) == 300


def test_index_build_calibrates_on_a_corpus_sample(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hwkit.cli import app
    from hwkit.plugins.retrievers import embedding
    from hwkit.plugins.retrievers.documents import join_content
    from hwkit.runtime import Runtime, current

    corpus = tmp_path / "corpus.jsonl"
    with (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        corpus.write_text("".join(line for _, line in zip(range(500), fh, strict=False)))
    calls: list[dict[str, Any]] = []
    runtimes: list[Runtime | None] = []

    class Stop(Exception):
        pass

    def spy(name: str, model: Any = None, *, runtime: Runtime | None = None, **options: Any) -> Any:
        calls.append({"name": name, **options})
        runtimes.append(runtime)
        raise Stop  # the options are what this test checks; embedding is tested above

    monkeypatch.setattr(embedding, "make_embedder", spy)
    runner = CliRunner()
    build = ["index", "build", str(tmp_path / "idx"), "--from", str(corpus), "-r", "dense"]
    for _ in range(2):
        res = runner.invoke(app, [*build, "--embedder", "openvino", "--int8", "full"])
        assert isinstance(res.exception, Stop), res.output
    first, second = calls
    assert first["name"] == "openvino" and first["int8"] == "full"
    assert all(rt is current() for rt in runtimes)  # built on the process's runtime
    assert len(first["calibration_texts"]) == 300 and first == second  # seeded: same sample
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    contents = {join_content(r["title"], r["text"]) for r in rows}
    assert set(first["calibration_texts"]) <= contents  # documents as the index embeds them
    res = runner.invoke(app, [*build, "--embedder", "openvino", "--int8", "weights"])
    assert calls[-1] == {"name": "openvino", "int8": "weights"}
    res = runner.invoke(app, [*build, "--int8", "full"])  # torch embedder: nothing to quantise
    assert isinstance(res.exception, UsageError) and "openvino" in str(res.exception)
