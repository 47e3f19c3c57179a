"""Contract tests for :class:`hwkit.inference.InferenceRuntime` and the Generator it loads.

Fixture a subclass supplies (the base class's raises NotImplementedError):

* ``inference_runtime``: an instance.

Optional: ``runtime_model`` (default: SmolLM2-135M-Instruct as a Hugging Face directory or
its GGUF file, whichever the runtime loads) and ``runtime_host`` (default: a runtime whose
only hardware is the kit's mock device, ``--hwkit-profile``). The model is loaded through
a ``generate`` plan made for that device, as ``hwkit.jobs.load_generator`` does; every
generation is a few tokens, so the kit stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from hwkit.errors import NoFitError, UsageError
from hwkit.inference import GenerationParams, Generator, InferenceRuntime, StreamResult

if TYPE_CHECKING:
    from hwkit.models import ResolvedModel
    from hwkit.runtime import Runtime
    from hwkit.testing.mock import MockDevice

MAX_NEW = 4  # tokens per generation
CONTEXT = 128  # the planned context: a prompt over it is cheap to build
HI = [{"role": "user", "content": "What is the capital of France?"}]
LONG_ANSWER = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


def load_planned(
    runtime: InferenceRuntime, model: ResolvedModel, host: Runtime, context: int = CONTEXT
) -> Generator:
    """``model`` loaded by ``runtime`` under a ``generate`` plan made on ``host``'s devices;
    skipped when no device there runs this runtime."""
    from hwkit.allocator import Job, ModelSpec
    from hwkit.jobs import place
    from hwkit.models import SMOLLM2, resolve

    config = model.config_dir or resolve(SMOLLM2.name).path
    job = Job(
        "generate",
        ModelSpec.from_pretrained(config),
        seq_len=context,
        effective_batch=1,
        runtimes=(runtime.name,),
    )
    try:
        placement = place(job, host)
    except NoFitError as exc:
        pytest.skip(f"the kit's device cannot run {runtime.name}: {exc.one_line()}")
    return runtime.load(model, placement.plan, placement.device)


class InferenceRuntimeContract:
    @pytest.fixture(scope="class")
    def inference_runtime(self) -> InferenceRuntime:
        raise NotImplementedError("supply an `inference_runtime` fixture: the runtime under test")

    @pytest.fixture(scope="class")
    def runtime_model(self, inference_runtime: InferenceRuntime) -> ResolvedModel:
        from hwkit.models import SMOLLM2, resolve

        if "hf" in inference_runtime.formats:
            return resolve(SMOLLM2.name)
        if "gguf" in inference_runtime.formats:
            return resolve(SMOLLM2.gguf_path())
        pytest.skip(
            f"the kit's SmolLM2 is a Hugging Face directory or a GGUF file; "
            f"{inference_runtime.name} loads {', '.join(inference_runtime.formats)}"
        )

    @pytest.fixture(scope="class")
    def runtime_host(self, hwkit_mock_device: MockDevice) -> Runtime:
        from hwkit.testing import mock_runtime

        return mock_runtime(hwkit_mock_device.profile)

    @pytest.fixture(scope="class")
    def generator(
        self,
        inference_runtime: InferenceRuntime,
        runtime_model: ResolvedModel,
        runtime_host: Runtime,
    ) -> Iterator[Generator]:
        loaded = load_planned(inference_runtime, runtime_model, runtime_host)
        yield loaded
        loaded.close()

    def test_identity(
        self, inference_runtime: InferenceRuntime, runtime_model: ResolvedModel
    ) -> None:
        assert isinstance(inference_runtime, InferenceRuntime)
        assert isinstance(inference_runtime.name, str) and inference_runtime.name
        assert inference_runtime.formats
        assert set(inference_runtime.formats) <= {"hf", "gguf", "openvino"}
        assert inference_runtime.accepts(runtime_model)

    def test_loads_through_a_plan(
        self, inference_runtime: InferenceRuntime, generator: Generator, runtime_host: Runtime
    ) -> None:
        plan = generator.plan
        assert isinstance(generator, Generator)
        assert plan.job == "generate" and plan.runtime == inference_runtime.name
        assert plan.max_seq_len == CONTEXT
        # the device the plan names, from the host's own devices
        assert generator.device is runtime_host.device(plan.device)
        assert isinstance(generator.name, str) and generator.name

    def test_prompt_counts_its_tokens(self, generator: Generator) -> None:
        prompt = generator.prompt(HI, MAX_NEW)
        assert 0 < prompt.prompt_tokens < CONTEXT and prompt.max_new_tokens == MAX_NEW

    def test_prompt_over_the_context_is_refused(self, generator: Generator) -> None:
        with pytest.raises(UsageError):
            generator.prompt([{"role": "user", "content": "word " * CONTEXT}], MAX_NEW)
        fits = generator.prompt(HI, MAX_NEW)
        with pytest.raises(UsageError):  # the prompt fits, its new tokens do not
            generator.prompt(HI, CONTEXT - fits.prompt_tokens + 1)

    def test_greedy_stream_equals_generate(self, generator: Generator) -> None:
        params = GenerationParams(max_new_tokens=MAX_NEW)
        prompt = generator.prompt(HI, MAX_NEW)
        whole = generator.generate(prompt, params)
        result = StreamResult()
        streamed = "".join(generator.stream(generator.prompt(HI, MAX_NEW), params, result))
        assert whole.text and streamed == whole.text
        assert result.completion_tokens == whole.completion_tokens <= MAX_NEW
        assert result.finish_reason == whole.finish_reason
        assert whole.prompt_tokens == prompt.prompt_tokens

    def test_finish_reason_is_length_at_max_new_tokens(self, generator: Generator) -> None:
        completion = generator.generate(generator.prompt(LONG_ANSWER, 2), GenerationParams(2))
        assert completion.finish_reason == "length" and completion.completion_tokens == 2

    def test_close_releases_and_may_be_repeated(
        self,
        inference_runtime: InferenceRuntime,
        runtime_model: ResolvedModel,
        runtime_host: Runtime,
    ) -> None:
        own = load_planned(inference_runtime, runtime_model, runtime_host)
        assert own.generate(own.prompt(HI, 1), GenerationParams(1)).completion_tokens == 1
        own.close()
        own.close()
