"""GRPO plans: the allocator counts sampling (group, KV cache at the longest completion)
as well as the update, turns the knobs that keep the algorithm (micro-batch, completions
sampled together) before the ones that change it, and names the knob it turned."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hwkit.allocator import Job, ModelSpec, Settings, estimate, plan
from hwkit.allocator.memory import generation_peak, kv_cache_bytes
from hwkit.errors import NoFitError, UsageError
from hwkit.plugin_manager import load_plugins
from hwkit.testing import MockDevice

PROFILES = load_plugins().profiles
QWEN7B = ModelSpec.from_pretrained("Qwen/Qwen2.5-7B-Instruct")
SMOL = ModelSpec.from_pretrained("smollm2-135m")
HOST = 64 * 1024**3


def mock(name: str, host_total: int = HOST) -> MockDevice:
    return MockDevice(PROFILES.get(name), host_total=host_total)


def grpo(model: ModelSpec = QWEN7B, **kw: object) -> Job:
    args: dict[str, object] = {
        "kind": "grpo",
        "seq_len": 512 + 256,
        "completion_len": 256,
        "effective_batch": 32,
        "lora_rank": 16,
    }
    args.update(kw)
    return Job(model=model, **args)  # type: ignore[arg-type]


def test_sampling_peak_counts_the_kv_cache_of_every_completion_at_full_length() -> None:
    job = grpo(SMOL, group_size=8)
    one = Settings("float32", "none", 4, False, group_size=8, generation_batch=8)
    four = dataclasses.replace(one, generation_batch=32)
    kv8 = kv_cache_bytes(SMOL, job.seq_len, 8, "float32")
    assert kv_cache_bytes(SMOL, job.seq_len, 32, "float32") == 4 * kv8
    # the KV cache dominates the sampling peak and grows with the sequences sampled together
    assert kv8 < generation_peak(job, one) < 2 * kv8
    assert generation_peak(job, four) > 3.5 * generation_peak(job, one)
    # a longer completion costs more both in sampling and in the update's logits
    longer = grpo(SMOL, group_size=8, seq_len=512 + 512, completion_len=512)
    assert generation_peak(longer, one) > generation_peak(job, one)
    assert estimate(longer, one).logits == 2 * estimate(job, one).logits


def test_update_logits_cover_the_completion_only() -> None:
    job = grpo(SMOL, group_size=8)
    sft = Job("sft", SMOL, seq_len=job.seq_len, effective_batch=32, lora_rank=16)
    settings = Settings("float32", "none", 4, False, group_size=8, generation_batch=32)
    # same rows and length; grpo keeps logits for 256 of 768 positions (and one more copy)
    ratio = estimate(job, settings).logits / estimate(sft, settings).logits
    assert ratio == pytest.approx((256 / 768) * 20 / 16)
    assert estimate(job, settings).activations == estimate(sft, settings).activations


def test_plan_names_group_sampling_and_completion_reasons() -> None:
    p = plan(grpo(), devices=[mock("h200")])
    assert p.job == "grpo" and p.group_size == 8 and p.completion_len == 256
    assert p.generation_batch is not None and p.generation_batch % p.group_size == 0
    assert p.generation_batch % p.micro_batch == 0 and 32 % p.generation_batch == 0
    assert p.effective_batch == 32
    assert "largest of 8, 4, 2" in p.reasons["group_size"]
    assert "completions sampled together" in p.reasons["generation_batch"]
    assert "256 new tokens at most" in p.reasons["completion_len"]
    assert p.estimate.total <= p.budget


def test_a_small_card_samples_in_rounds_before_it_shrinks_the_group() -> None:
    """Qwen2.5-7B LoRA, 1024-token prompts and completions, 32 completions a step: an H200
    samples them all at once; a 16 GB T4 (nf4) samples them in rounds and keeps the group
    of 8 (the algorithm) unchanged."""
    job = grpo(seq_len=1024 + 1024, completion_len=1024, effective_batch=32)
    big = plan(job, devices=[mock("h200")])
    small = plan(job, devices=[mock("t4")])
    assert big.generation_batch == 32 and big.quantization == "none"
    assert small.group_size == 8 and small.generation_batch is not None
    assert small.generation_batch < 32 and small.quantization == "nf4"
    assert "do not fit: sampled in" in small.reasons["generation_batch"]
    assert small.estimate.total <= small.budget < big.budget
    # twice the completion length does not fit the T4 at all: the refusal names the knobs
    with pytest.raises(NoFitError) as info:
        plan(grpo(seq_len=1024 + 2048, completion_len=2048), devices=[mock("t4")])
    assert "max_completion_length" in info.value.one_line()


def mha_model(folder: Path) -> ModelSpec:
    """A 2B-class model with a KV head per query head (no GQA): sampling dominates."""
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 2048,
        "intermediate_size": 2048,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 16384,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return ModelSpec.from_pretrained(folder)


def test_an_open_group_size_shrinks_when_sampling_does_not_fit(tmp_path: Path) -> None:
    model = mha_model(tmp_path)
    device = mock("cpu", host_total=32 * 1024**3)
    job = grpo(model, seq_len=512 + 4096, completion_len=4096, effective_batch=16)
    p = plan(job, devices=[device])
    assert (p.group_size, p.generation_batch, p.micro_batch) == (4, 4, 1)
    assert p.reasons["group_size"] == "4: 8 do not fit"
    # the same job with the group fixed at 8 is refused, naming the smaller group
    with pytest.raises(NoFitError) as info:
        plan(dataclasses.replace(job, group_size=8), devices=[device])
    assert "nearest plan that fits: num_generations 4" in info.value.one_line()
    # and a machine twice the size keeps the group of 8
    assert plan(job, devices=[mock("cpu", host_total=64 * 1024**3)]).group_size == 8


def test_full_grpo_counts_a_reference_copy_only_with_kl() -> None:
    settings = Settings("bfloat16", "none", 1, True, group_size=4, generation_batch=4)
    without = grpo(SMOL, lora_rank=None, group_size=4, effective_batch=8)
    with_ref = dataclasses.replace(without, reference=True)
    assert without.full_weights and not grpo(SMOL).full_weights
    extra = estimate(with_ref, settings).weights - estimate(without, settings).weights
    assert extra == SMOL.param_count * 2


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"completion_len": 0}, "completion length 0"),
        ({"completion_len": 768}, "below the sequence length"),
        ({"group_size": 1}, "group size 1"),
        ({"group_size": 3}, "not a multiple of the group size 3"),
        ({"effective_batch": 7}, "not a multiple of the group size 8 or 4 or 2"),
    ],
)
def test_bad_grpo_jobs_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        grpo(SMOL, **kw)


def test_hwkit_plan_grpo_prints_the_sampling_choices() -> None:
    from tests.cli import run_hwkit

    args = ("plan", "grpo", "--model", "smollm2-135m", "--seq-len", "448", "--batch", "8")
    done = run_hwkit(*args, "--completion-len", "64", "--profile", "rtx5090", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["job"], found["completion_len"], found["group_size"]) == ("grpo", 64, 8)
    assert (
        found["generation_batch"] == 8
        and "sampling peaks at" in (found["reasons"]["completion_len"])
    )
    bad = run_hwkit(*args, "--group-size", "3")
    assert bad.returncode != 0
    assert "effective batch 8 (completions per step) is not a multiple of the group size 3" in (
        bad.stderr
    )
