"""The torch and OpenVINO embedders on the real all-MiniLM-L6-v2 and SciFact texts.

Every embedder here is built the way hwkit builds them, by the core
(``hwkit.jobs.load_embedder``). Tests that compare vectors with a float32 reference plan
on a mock CPU (a float32 plan whatever this machine's CPU is: one with AMX would get a
bfloat16 plan); the others run on this machine's own runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from hwkit.errors import HwkitError, NotFoundError, UsageError
from hwkit.jobs import load_embedder
from hwkit.models import resolve_model
from hwkit.plugins.embedders.openvino_convert import IRConverter
from hwkit.plugins.embedders.openvino_embedder import OpenVINOEmbedder, openvino_device_name
from hwkit.plugins.embedders.torch_embedder import TorchEmbedder
from hwkit.runtime import Runtime
from hwkit.testing import MockDevice, mock_device, mock_runtime

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scifact_texts(shared_data: Path) -> list[str]:
    """24 SciFact abstracts (several over 256 tokens) and 8 short claims: mixed lengths."""
    docs, claims = [], []
    with (shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(24), strict=False):
            row = json.loads(line)
            docs.append(f"{row['title']} {row['text']}")
    with (shared_data / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        for line, _ in zip(fh, range(8), strict=False):
            claims.append(json.loads(line)["text"])
    mixed = []
    for i, doc in enumerate(docs):  # interleave, so input order differs from length order
        mixed.append(doc)
        if i % 3 == 0 and claims:
            mixed.append(claims.pop())
    return mixed


@pytest.fixture(scope="module")
def cpu() -> Runtime:
    return mock_runtime("cpu")


@pytest.fixture(scope="module")
def torch_embedder(cpu: Runtime) -> TorchEmbedder:
    emb = load_embedder("torch", runtime=cpu, batch_size=8)
    assert isinstance(emb, TorchEmbedder)
    return emb


@pytest.fixture(scope="module")
def torch_vectors(torch_embedder: TorchEmbedder, scifact_texts: list[str]) -> np.ndarray:
    return torch_embedder.embed(scifact_texts)


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


@pytest.fixture(scope="module")
def ov_embedder(ov_cache: Path, cpu: Runtime) -> OpenVINOEmbedder:
    emb = load_embedder("openvino", runtime=cpu, cache_dir=ov_cache, batch_size=8)
    assert isinstance(emb, OpenVINOEmbedder)
    return emb


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


# -- torch ----------------------------------------------------------------------------------
def test_torch_vectors_are_unit_float32_in_input_order(
    torch_embedder: TorchEmbedder, torch_vectors: np.ndarray, scifact_texts: list[str]
) -> None:
    assert torch_vectors.shape == (len(scifact_texts), 384)
    assert torch_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(torch_vectors, axis=1), 1.0, atol=1e-5)
    # Length sorting must not reorder rows: each text alone gives its own row back.
    for i in (0, 1, len(scifact_texts) - 1):
        alone = torch_embedder.embed([scifact_texts[i]])[0]
        assert float(alone @ torch_vectors[i]) > 0.99999, i


def test_torch_matches_sentence_transformers(
    torch_vectors: np.ndarray, scifact_texts: list[str]
) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_model("all-minilm-l6-v2")), device="cpu").encode(
        scifact_texts, normalize_embeddings=True, batch_size=8
    )
    assert cosines(torch_vectors, reference).min() > 1 - 1e-5


def test_long_texts_are_truncated_and_counted_not_rejected(torch_embedder: TorchEmbedder) -> None:
    from structlog.testing import capture_logs

    long_text = "protein folding " * 400  # ~800 tokens, over the model's 256
    with capture_logs() as logs:
        vectors = torch_embedder.embed([long_text, "short", long_text])
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[2]) > 0.99999
    warnings = [e for e in logs if e["event"] == "texts truncated"]
    assert len(warnings) == 1 and warnings[0]["count"] == 2 and warnings[0]["max_length"] == 256


def test_query_prefix_changes_query_vectors_only() -> None:
    emb = load_embedder("torch", query_prefix="query: ", batch_size=4)
    text = ["Vitamin D deficiency is linked to depression."]
    plain = load_embedder("torch", batch_size=4)
    assert float(emb.embed(text, kind="document")[0] @ plain.embed(text)[0]) > 0.99999
    assert float(emb.embed(text, kind="query")[0] @ plain.embed(text)[0]) < 0.999
    assert float(emb.embed(text, kind="query")[0] @ plain.embed(["query: " + text[0]])[0]) > 0.99999


def test_torch_runs_on_a_mock_device_and_hits_its_oom() -> None:
    import torch

    emb = load_embedder("torch", runtime=mock_runtime("cpu"), batch_size=4)
    device = emb.device
    assert isinstance(device, MockDevice) and device.present
    assert emb.embed(["a", "b"]).shape == (2, 384)
    device.inject_oom(times=1)
    with pytest.raises(torch.OutOfMemoryError):
        emb.embed(["a"])


def test_a_device_it_was_given_is_used_as_is() -> None:
    import torch

    device = mock_device("cpu")
    emb = TorchEmbedder(device=device, batch_size=4)
    assert emb.device is device and emb.plan is None and emb.dtype == "float32"
    assert emb.batch_size == 4
    assert {p.dtype for p in emb.encoder.parameters()} == {torch.float32}


def test_no_device_is_refused_never_a_silent_cpu() -> None:
    for cls in (TorchEmbedder, OpenVINOEmbedder):
        for device in (None, "cpu:0"):
            with pytest.raises(UsageError, match="needs a hwkit Device") as info:
                cls(device=cast(Any, device))
            assert "hwkit.jobs.load_embedder" in info.value.one_line()


def test_bad_input() -> None:
    emb = load_embedder("torch", batch_size=4)
    empty = emb.embed([])
    assert empty.shape == (0, emb.dim) and empty.dtype == np.float32
    with pytest.raises(UsageError, match="single string"):
        emb.embed("not a list")
    with pytest.raises(UsageError, match="kind"):
        emb.embed(["x"], kind="passage")


def test_missing_model_dir_is_one_line_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    for name in ("torch", "openvino"):
        with pytest.raises(NotFoundError) as info:
            load_embedder(name, model=missing)
        message = info.value.one_line()
        assert str(missing) in message and "\n" not in message


# -- OpenVINO --------------------------------------------------------------------------------
def test_openvino_matches_torch(
    ov_embedder: OpenVINOEmbedder, torch_vectors: np.ndarray, scifact_texts: list[str]
) -> None:
    vectors = ov_embedder.embed(scifact_texts)
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines(vectors, torch_vectors).min() >= 0.999
    queries = ov_embedder.embed(scifact_texts[:3], kind="query")  # LATENCY-hint compilation
    assert cosines(queries, torch_vectors[:3]).min() >= 0.999
    assert ov_embedder.embed([]).shape == (0, 384)


def test_openvino_ir_cache_hit_converts_nothing(
    ov_embedder: OpenVINOEmbedder, ov_cache: Path
) -> None:
    xml = ov_embedder.ir_dir / "model.xml"
    mtime = xml.stat().st_mtime_ns
    before = IRConverter.conversions
    again = load_embedder("openvino", cache_dir=ov_cache, batch_size=8)
    assert isinstance(again, OpenVINOEmbedder) and again.converted is False
    assert IRConverter.conversions == before
    assert again.ir_dir == ov_embedder.ir_dir and xml.stat().st_mtime_ns == mtime
    assert not [p for p in ov_cache.iterdir() if p.name.startswith(".tmp-")]  # no leftovers


def test_openvino_static_shapes_pad_like_an_npu(
    ov_embedder: OpenVINOEmbedder, ov_cache: Path, scifact_texts: list[str], cpu: Runtime
) -> None:
    # An NPU compiles static shapes only; the same code path runs on CPU when asked to.
    static = load_embedder(
        "openvino",
        runtime=cpu,
        cache_dir=ov_cache,
        batch_size=4,
        max_length=128,
        static_shape=True,
    )
    assert isinstance(static, OpenVINOEmbedder)
    assert static.converted is False  # same IR, reshaped at compile time
    assert static.plan is not None and static.batch_size == static.plan.micro_batch == 4
    texts = scifact_texts[:6]  # 6 rows: the second batch is padded with 2 empty rows
    reference = load_embedder("torch", runtime=cpu, max_length=128, batch_size=4).embed(texts)
    assert cosines(static.embed(texts), reference).min() >= 0.999
    with pytest.raises(UsageError, match="static batch"):
        static.embed(texts, batch_size=2)


def test_openvino_int8_is_close_to_fp32(
    ov_embedder: OpenVINOEmbedder,
    ov_cache: Path,
    torch_vectors: np.ndarray,
    scifact_texts: list[str],
    cpu: Runtime,
) -> None:
    pytest.importorskip("nncf")
    int8 = load_embedder("openvino", runtime=cpu, cache_dir=ov_cache, int8=True, batch_size=8)
    assert isinstance(int8, OpenVINOEmbedder)
    assert int8.meta["int8"] is True and int8.ir_dir != ov_embedder.ir_dir
    assert int8.int8 == int8.meta["int8_mode"] == "weights"  # True: weight-only, as before
    fp32_bytes = (ov_embedder.ir_dir / "model.bin").stat().st_size
    assert (int8.ir_dir / "model.bin").stat().st_size < 0.5 * fp32_bytes  # weights really int8
    assert cosines(int8.embed(scifact_texts), torch_vectors).min() >= 0.99


def test_unavailable_openvino_device_names_what_exists(ov_cache: Path) -> None:
    import openvino as ov

    from hwkit.errors import UnavailableError

    if any(d.startswith("NPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an NPU")
    # The core plans the NPU (its profile runs only openvino); OpenVINO here has none.
    with pytest.raises(UnavailableError, match=r"NPU \(for npu:0\).*OpenVINO sees"):
        load_embedder("openvino", runtime=mock_runtime("intel-npu-lunar-lake"), cache_dir=ov_cache)


def test_openvino_is_planned_only_where_the_openvino_runtime_runs(ov_cache: Path) -> None:
    assert OpenVINOEmbedder.runtime == "openvino" and TorchEmbedder.runtime == "transformers"
    with pytest.raises(HwkitError, match="not openvino"):
        load_embedder("openvino", runtime=mock_runtime("rtx5090"), cache_dir=ov_cache)
    with pytest.raises(HwkitError, match="not transformers"):
        load_embedder("torch", runtime=mock_runtime("intel-npu-lunar-lake"))


def test_openvino_device_names_follow_the_hwkit_device_kind() -> None:
    names = {
        profile: openvino_device_name(mock_device(profile))
        for profile in ("cpu", "arc-meteor-lake", "intel-npu-lunar-lake")
    }
    assert names == {"cpu": "CPU", "arc-meteor-lake": "GPU", "intel-npu-lunar-lake": "NPU"}
    assert openvino_device_name(mock_device("arc-meteor-lake", index=1)) == "GPU.1"
    with pytest.raises(UsageError, match="OpenVINO cannot run on cuda:0"):
        openvino_device_name(mock_device("rtx5090"))


def test_openvino_on_this_machine_shares_the_ir(ov_embedder: OpenVINOEmbedder) -> None:
    assert isinstance(ov_embedder.device, MockDevice) and ov_embedder.device_name == "CPU"
    assert ov_embedder.inference_precision == "f32"  # the mock CPU plan's float32
    emb = load_embedder("openvino", cache_dir=ov_embedder.cache_root)  # this machine's runtime
    assert isinstance(emb, OpenVINOEmbedder) and emb.device_name == "CPU"
    assert emb.device.id == "cpu:0" and not isinstance(emb.device, MockDevice)
    assert emb.ir_dir == ov_embedder.ir_dir and emb.converted is False  # one IR per model


def test_plugin_registers_embedders_and_trainer() -> None:
    from hwkit.plugin_manager import load_plugins

    pm = load_plugins()
    assert pm.embedders.get("torch") is TorchEmbedder
    assert pm.embedders.get("openvino") is OpenVINOEmbedder
    assert pm.trainers.get("embedder").name == "embedder"
