"""Inference plans pick what a practitioner would on each profile, and count the KV cache
by the formula, from each model's own config.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hwkit.allocator import Job, ModelSpec, plan
from hwkit.errors import NoFitError
from hwkit.plugin_manager import load_plugins
from hwkit.testing import MockDevice, mock_runtime

PROFILES = load_plugins().profiles
LAPTOP = 32 * 1024**3  # host memory of a Core Ultra laptop, for the shared-memory profiles

LLMS = {
    "mistral-7b": "mistralai--Mistral-7B-Instruct-v0.3",
    "llama-3.1-8b": "meta-llama--Llama-3.1-8B-Instruct",
    "llama-3.2-1b": "meta-llama--Llama-3.2-1B-Instruct",
}
GPU_PROFILES = ("rtx5090", "h200", "t4")
INTEL_PROFILES = ("arc-meteor-lake", "intel-npu-meteor-lake")


def generate(model: str, context: int = 4096, sequences: int = 8) -> Job:
    spec = ModelSpec.from_pretrained(model)
    return Job("generate", spec, seq_len=context, effective_batch=sequences)


def laptop(profile: str) -> MockDevice:
    return MockDevice(PROFILES.get(profile), host_total=LAPTOP)


@pytest.mark.parametrize("profile", GPU_PROFILES + INTEL_PROFILES)
@pytest.mark.parametrize("model", sorted(LLMS))
def test_generation_plans_under_hwkit_profile(
    profile: str, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device, runtime and dtype follow the hardware named by HWKIT_PROFILE."""
    monkeypatch.setenv("HWKIT_PROFILE", profile)
    p = plan(generate(model, context=2048, sequences=1))
    assert p.profile == profile and not p.present
    expected = {
        "rtx5090": ("cuda:0", "transformers", "bfloat16"),
        "h200": ("cuda:0", "transformers", "bfloat16"),
        "t4": ("cuda:0", "transformers", "float16"),  # Turing: no native bf16
        "arc-meteor-lake": ("xpu:0", "openvino", "float16"),  # no XMX: bf16 emulated
        "intel-npu-meteor-lake": ("npu:0", "openvino", "float16"),
    }[profile]
    assert (p.device, p.runtime, p.dtype) == expected
    assert p.estimate.total <= p.budget
    for key in ("device", "runtime", "dtype", "quantization", "micro_batch", "kv_cache"):
        assert p.reasons[key], key
    assert "trains" not in " ".join(p.reasons.values())


@pytest.mark.parametrize("model", sorted(LLMS))
def test_h200_serves_bf16_with_flash_attention_and_room_for_eight(model: str) -> None:
    p = plan(generate(model), runtime=mock_runtime("h200"))
    assert (p.dtype, p.attention, p.quantization, p.micro_batch) == (
        "bfloat16",
        "flash_attention_2",
        "none",
        8,
    )
    assert p.present  # the mock device stands in for the H200


def test_t4_quantises_only_the_models_that_do_not_fit_in_fp16() -> None:
    t4 = mock_runtime("t4")
    small = plan(generate("llama-3.2-1b"), runtime=t4)
    assert (small.dtype, small.quantization) == ("float16", "none")
    for model in ("mistral-7b", "llama-3.1-8b"):
        big = plan(generate(model), runtime=t4)
        assert big.dtype == "float16" and big.quantization == "nf4"
        assert "do not fit" in big.reasons["quantization"]
        assert big.attention == "sdpa"  # FlashAttention-2 needs sm_80+


def test_rtx5090_holds_an_8b_model_unquantised() -> None:
    p = plan(generate("llama-3.1-8b", sequences=4), runtime=mock_runtime("rtx5090"))
    assert (p.dtype, p.quantization, p.runtime) == ("bfloat16", "none", "transformers")


def test_meteor_lake_arc_runs_openvino_fp16_and_compresses_large_models() -> None:
    arc = laptop("arc-meteor-lake")
    small = plan(generate("llama-3.2-1b"), devices=[arc])
    assert (small.runtime, small.dtype, small.quantization) == ("openvino", "float16", "none")
    big = plan(generate("llama-3.1-8b"), devices=[arc])
    assert big.runtime == "openvino" and big.quantization in ("int8", "int4")
    assert big.estimate.weights < small.estimate.weights * 8  # compressed, not fp16


def test_the_npu_runs_openvino_with_int8_then_int4_weights() -> None:
    npu = laptop("intel-npu-meteor-lake")
    for model in LLMS:
        p = plan(generate(model, context=2048, sequences=1), devices=[npu])
        assert p.runtime == "openvino" and p.quantization in ("int8", "int4"), model
    small = plan(generate("llama-3.2-1b", context=2048, sequences=1), devices=[npu])
    assert small.quantization == "int8"
    assert "int8, int4" in small.reasons["quantization"]
    # a 16 GB laptop's NPU budget (8 GB) takes an 8B model only at INT4
    small_host = MockDevice(PROFILES.get("intel-npu-meteor-lake"), host_total=16 * 1024**3)
    p = plan(generate("llama-3.1-8b", context=2048, sequences=1), devices=[small_host])
    assert p.quantization == "int4" and "int8 do not fit" in p.reasons["quantization"]


@pytest.mark.parametrize(
    ("profile", "runtime", "dtype", "weights"),
    [
        ("h200", "transformers", "bfloat16", "none"),
        ("rtx5090", "transformers", "bfloat16", "none"),
        ("t4", "transformers", "float16", "none"),
        ("arc-meteor-lake", "openvino", "float16", "none"),
        ("intel-npu-meteor-lake", "openvino", "float16", "int8"),
    ],
)
def test_bge_large_embedding_plans(profile: str, runtime: str, dtype: str, weights: str) -> None:
    job = Job("embed", ModelSpec.from_pretrained("bge-large"), seq_len=512, effective_batch=64)
    p = plan(job, devices=[laptop(profile)])
    assert (p.runtime, p.dtype, p.quantization) == (runtime, dtype, weights)
    assert p.estimate.kv_cache == 0 and p.micro_batch >= 1
    assert "texts encoded together" in p.reasons["micro_batch"]


@pytest.mark.parametrize("model", sorted(LLMS))
@pytest.mark.parametrize("profile", ("h200", "t4"))
def test_kv_cache_matches_the_formula_from_config_json(
    model: str, profile: str, shared_data: Path
) -> None:
    """2 (keys, values) x layers x KV heads x head dim x context x bytes x sequences, with
    the sizes read here straight from the upstream config.json."""
    config = json.loads(
        (shared_data / "model-configs" / LLMS[model] / "config.json").read_text("utf-8")
    )
    layers = config["num_hidden_layers"]
    kv_heads = config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    p = plan(generate(model, context=4096, sequences=8), runtime=mock_runtime(profile))
    per_seq = 2 * layers * kv_heads * head_dim * 4096 * 2  # fp16 / bf16
    assert p.estimate.kv_cache == per_seq * p.micro_batch
    assert f"{kv_heads} KV heads x {head_dim} head dim" in p.reasons["kv_cache"]


def test_a_model_larger_than_every_device_names_the_nearest_plan() -> None:
    with pytest.raises(NoFitError) as info:
        plan(generate("llama-3.1-8b", context=8192, sequences=8), devices=[laptop("cpu")])
    message = str(info.value)
    assert "\n" not in message and "nearest plan that fits" in message


def test_a_runtime_the_device_lacks_is_refused_with_what_it_runs() -> None:
    job = Job(
        "generate",
        ModelSpec.from_pretrained("llama-3.2-1b"),
        seq_len=1024,
        effective_batch=1,
        runtimes=("transformers",),
    )
    with pytest.raises(NoFitError) as info:
        plan(job, devices=[laptop("intel-npu-meteor-lake")])
    assert "runs openvino, not transformers" in str(info.value)
    assert "convert the model into a format" in str(info.value)


def test_a_gguf_file_is_parsed_once_per_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server plans the same GGUF on every load and swap: its metadata is read once,
    and again only when the file changes."""
    import os
    import shutil

    import gguf

    from hwkit.models import SMOLLM2

    path = tmp_path / "model.gguf"
    shutil.copyfile(SMOLLM2.gguf_path(), path)
    reads: list[str] = []
    real = gguf.GGUFReader

    def counting(file: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(file)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", counting)
    first = ModelSpec.from_pretrained(path)
    again = ModelSpec.from_pretrained(path)
    assert again == first and len(reads) == 1
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # rewritten
    assert ModelSpec.from_pretrained(path) == first and len(reads) == 2
    link = tmp_path / "link.gguf"  # the same file by another name: its own name and source
    link.symlink_to(path)
    named = ModelSpec.from_pretrained(link)
    assert len(reads) == 2 and named.name == "link.gguf" and named.source == str(link)


def test_gguf_files_plan_from_their_metadata_and_stored_bytes() -> None:
    from hwkit.models import SMOLLM2

    gguf = SMOLLM2.gguf_path()
    spec = ModelSpec.from_pretrained(gguf)
    hf = ModelSpec.from_pretrained("smollm2-135m")
    sizes = ("num_layers", "hidden", "intermediate", "num_heads", "num_kv_heads", "head_dim")
    assert [getattr(spec, k) for k in sizes] == [getattr(hf, k) for k in sizes]
    assert spec.stored is not None and spec.stored.quantization == "q4_1"
    assert spec.stored.bytes < gguf.stat().st_size  # tensors, without the metadata
    job = Job("generate", spec, seq_len=2048, effective_batch=1, runtimes=("llama.cpp",))
    p = plan(job, runtime=mock_runtime("cpu"))
    assert p.runtime == "llama.cpp" and p.quantization == "q4_1"
    assert p.estimate.weights == spec.stored.bytes
    # llama.cpp keeps an f16 cache whatever the compute dtype
    assert p.estimate.kv_cache == 2 * 30 * 3 * 64 * 2048 * 2
