"""Properties of the memory model and planner that must hold for every input (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hwkit.allocator import Job, ModelSpec, Settings, estimate, plan
from hwkit.errors import NoFitError
from hwkit.runtime import current
from hwkit.testing import MockDevice

PROFILES = current().plugins.profiles
TRAINING_PROFILES = ["h200", "rtx5090", "t4", "arc-meteor-lake", "cpu", "l4", "a100-40gb"]
DECODERS = [
    ModelSpec.from_pretrained(n) for n in ("smollm2-135m", "llama-3.2-1b", "llama-3.1-8b", "phi-2")
]
HOST = 64 * 1024**3

kinds = st.sampled_from(["sft", "dpo", "full", "generate", "embed"])
models = st.sampled_from(DECODERS)
seqs = st.integers(min_value=16, max_value=2048)
pow2 = st.sampled_from([1, 2, 4, 8, 16, 32])
run_settings = st.builds(
    Settings,
    dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
    quantization=st.sampled_from(["none", "nf4"]),
    micro_batch=pow2,
    gradient_checkpointing=st.booleans(),
    attention=st.sampled_from(["sdpa", "eager"]),
    traits=st.sampled_from(
        [PROFILES.get(p).memory.traits() for p in ("h200", "cpu", "arc-meteor-lake")]
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    kind=kinds,
    model=models,
    seq=seqs,
    extra=st.integers(0, 2048),
    s=run_settings,
    rank=st.sampled_from([4, 8, 64]),
)
def test_more_tokens_never_need_less_memory(
    kind: str, model: ModelSpec, seq: int, extra: int, s: Settings, rank: int
) -> None:
    quant = "none" if kind == "full" else s.quantization
    s = dataclasses.replace(s, quantization=quant)
    job = Job(kind, model, seq_len=seq, effective_batch=64, lora_rank=rank, quantization=quant)  # type: ignore[arg-type]
    longer = dataclasses.replace(job, seq_len=min(model.max_positions, seq + extra))
    bigger = dataclasses.replace(s, micro_batch=s.micro_batch * 2)
    base = estimate(job, s)
    assert estimate(longer, s).total >= base.total
    assert estimate(job, bigger).total >= base.total
    if kind in ("sft", "dpo"):
        assert estimate(dataclasses.replace(job, lora_rank=rank * 2), s).total > base.total
        if not s.gradient_checkpointing:
            on = dataclasses.replace(s, gradient_checkpointing=True)
            assert estimate(job, on).activations <= base.activations


@settings(max_examples=30, deadline=None)
@given(
    profile=st.sampled_from(TRAINING_PROFILES),
    kind=st.sampled_from(["sft", "dpo", "full"]),
    model=models,
    seq=st.integers(min_value=32, max_value=4096),
    batch=st.integers(min_value=1, max_value=64),
    pressure=st.floats(min_value=0.0, max_value=0.9),
)
def test_plans_fit_keep_the_batch_and_shorter_jobs_fit_too(
    profile: str, kind: str, model: ModelSpec, seq: int, batch: int, pressure: float
) -> None:
    device = MockDevice(PROFILES.get(profile), host_total=HOST)
    device.apply_pressure(pressure)
    seq = min(seq, model.max_positions)
    job = Job(kind, model, seq_len=seq, effective_batch=batch)  # type: ignore[arg-type]
    try:
        p = plan(job, devices=[device])
    except NoFitError:
        return
    assert p.estimate.total <= p.budget <= device.memory().free
    assert p.micro_batch * p.grad_accum == batch
    assert batch % p.micro_batch == 0 and p.micro_batch & (p.micro_batch - 1) == 0
    # monotonic: whatever fits at this length and pressure fits shorter, and under less pressure
    shorter = plan(dataclasses.replace(job, seq_len=max(1, seq // 2)), devices=[device])
    assert shorter.estimate.total <= shorter.budget
    device.apply_pressure(pressure / 2)
    assert plan(job, devices=[device]).budget >= p.budget
