"""The allocator plans on a third party's device from what the device declares: the
emulator declares 8-bit weight kernels, so int8 weights are planned there, and refused on a
device that declares none (no backend name is involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hwkit_example_backend import EmuDevice

from hwkit.allocator import Job, ModelSpec, plan
from hwkit.errors import NoFitError
from hwkit.runtime import current
from hwkit.testing import MockDevice

# A 0.3B decoder: ~1.2 GB of float32 weights, over the emulator's 1 GB budget; ~0.4 GB
# with int8 linear layers.
CONFIG = {
    "model_type": "llama",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "vocab_size": 32000,
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
}


@pytest.fixture
def spec(tmp_path: Path) -> ModelSpec:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    return ModelSpec.from_pretrained(tmp_path)


def job(spec: ModelSpec, quantization: str = "auto") -> Job:
    return Job("sft", spec, seq_len=256, effective_batch=4, quantization=quantization)  # type: ignore[arg-type]


def test_the_declared_int8_kernels_make_the_model_fit(spec: ModelSpec) -> None:
    emu = EmuDevice(0)
    chosen = plan(job(spec), devices=[emu], runtime=current())
    assert chosen.device == "emu:0" and chosen.present
    assert chosen.quantization == "int8"
    assert "do not fit" in chosen.reasons["quantization"]
    assert chosen.estimate.total <= chosen.budget
    with pytest.raises(NoFitError):
        plan(job(spec, "none"), devices=[emu], runtime=current())


def test_a_device_without_the_kernels_is_refused_int8(spec: ModelSpec) -> None:
    cpu = MockDevice(current().plugins.profiles.get("cpu"))
    assert "int8" not in cpu.capabilities.quantization
    with pytest.raises(NoFitError, match="int8 weights need kernels cpu:0 does not declare"):
        plan(job(spec, "int8"), devices=[cpu], runtime=current())
    emu_plan = plan(job(spec, "int8"), devices=[EmuDevice(0)], runtime=current())
    assert emu_plan.quantization == "int8" and emu_plan.reasons["quantization"] == (
        "int8 as requested"
    )
