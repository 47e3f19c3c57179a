"""The built-in ``transformers`` inference runtime: the conformance kit on a mock device,
and what is its own (LoRA runs merged on load, tokenizers, devices without torch)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hwkit.errors import NotFoundError, UsageError
from hwkit.inference import GenerationParams, InferenceRuntime
from hwkit.models import resolve
from hwkit.plugins.runtimes.transformers import (
    TransformersGenerator,
    TransformersRuntime,
    load_config,
    load_tokenizer,
)
from hwkit.testing import mock_runtime
from hwkit.testing.suite import InferenceRuntimeContract
from hwkit.testing.suite.exporter import kit_lora_run, kit_model

MODEL = "smollm2-135m-instruct"


class TestTransformersRuntimeContract(InferenceRuntimeContract):
    @pytest.fixture(scope="class")
    def inference_runtime(self) -> InferenceRuntime:
        return TransformersRuntime()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kit_model(tmp_path_factory.mktemp("kit") / "tiny")


def test_a_lora_run_is_merged_on_load_in_the_plan_dtype(
    tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import torch

    from hwkit.jobs import load_generator

    run = kit_lora_run(tiny, tmp_path_factory.mktemp("run") / "run")
    runtime = mock_runtime("h200")
    merged = load_generator(run, runtime=runtime)
    base = load_generator(tiny, runtime=runtime)
    assert isinstance(merged, TransformersGenerator) and isinstance(base, TransformersGenerator)
    assert merged.name == "run" and merged.device.id == "cuda:0"
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert {p.dtype for p in merged.model.parameters()} == {torch.bfloat16}
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        moved = (merged.model(input_ids=ids).logits - base.model(input_ids=ids).logits).abs()
    assert float(moved.max()) > 0.01  # the adapter is in the weights
    merged.close()
    base.close()


def test_finish_reason_is_stop_at_the_end_of_turn() -> None:
    from hwkit.jobs import load_generator

    generator = load_generator(MODEL, runtime=mock_runtime("cpu"), context=256)
    prompt = generator.prompt([{"role": "user", "content": "Say just: yes"}], 24)
    completion = generator.generate(prompt, GenerationParams(24))
    assert completion.finish_reason == "stop" and completion.completion_tokens < 24
    generator.close()


def test_the_planned_context_bounds_prompts() -> None:
    from hwkit.jobs import load_generator

    generator = load_generator(MODEL, runtime=mock_runtime("cpu"), context=64)
    assert generator.plan.max_seq_len == 64
    with pytest.raises(UsageError, match=r"exceeds the planned context of 64"):
        generator.prompt([{"role": "user", "content": "word " * 80}], 4)
    generator.close()


def test_a_device_without_torch_is_refused(tiny: Path) -> None:
    """Hardware that is not in this machine (a plan for it can be shown, not run)."""
    from hwkit.absent import AbsentDevice
    from hwkit.allocator import Job, ModelSpec
    from hwkit.jobs import place

    runtime = mock_runtime("cpu")
    job = Job("generate", ModelSpec.from_pretrained(tiny), seq_len=64, effective_batch=1)
    plan = place(job, runtime).plan
    absent = AbsentDevice(runtime.plugins.profiles.get("h200"), host_total=64 * 2**30)
    with pytest.raises(UsageError, match=r"cuda:0 has no torch device"):
        TransformersRuntime().load(resolve(tiny), plan, absent)


def test_missing_tokenizer_and_config_are_one_line_errors(tiny: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tiny / "config.json", bare / "config.json")
    with pytest.raises(NotFoundError, match=r"has no tokenizer \(tokenizer.json\)"):
        load_tokenizer(resolve(bare))
    assert load_config(resolve(bare))["num_hidden_layers"] == 2
