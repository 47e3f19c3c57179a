"""The ``openvino`` inference runtime: OpenVINO GenAI over the KV-cache IR that
``hwkit export openvino --kv-cache`` writes. The conformance kit over SmolLM2's FP16 IR on
hwkit's mock CPU device, greedy replies equal to the transformers runtime's, the INT8 IR's
agreement, and the one-line refusals (a full-sequence IR, no openvino_genai, a device
OpenVINO does not see). SmolLM2 is exported once per test session."""
# ruff: noqa: F811  (pytest fixtures imported from the export fixtures module)

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hwkit.errors import UnavailableError, UsageError
from hwkit.extras import install_hint, is_available
from hwkit.inference import GenerationParams, Generator, InferenceRuntime, StreamResult
from hwkit.models import ResolvedModel
from hwkit.plugins.runtimes.openvino import (
    OpenVINOGenerator,
    OpenVINORuntime,
    npu_lengths,
    pipeline_properties,
)
from hwkit.testing import mock_runtime
from hwkit.testing.mock import mock_device
from hwkit.testing.suite import InferenceRuntimeContract
from hwkit.testing.suite.exporter import kit_model
from hwkit.testing.suite.runtime import load_planned
from tests.plugins.exporters.test_export_fixtures import smol, smol_openvino_kv  # noqa: F401

if TYPE_CHECKING:
    from hwkit.plan import Plan

needs_genai = pytest.mark.skipif(
    not is_available("openvino_genai"),
    reason=f"openvino_genai is not installed ({install_hint('openvino_genai')}; "
    "make install-test installs it)",
)

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [
        {"role": "system", "content": "You are Ada, a terse assistant."},
        {"role": "user", "content": "Say just: yes"},
    ],
]
NEW = 24  # tokens per reply


def ir_model(folder: Path) -> ResolvedModel:
    """An IR directory as the runtime gets it from the resolver."""
    return ResolvedModel(str(folder), folder, "openvino", tokenizer_dir=folder)


@pytest.fixture(scope="module")
def full_sequence_ir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-sequence IR (the default export, no KV cache) of the kit's small model."""
    from hwkit.plugins.exporters import OpenVINOExporter

    work = tmp_path_factory.mktemp("full")
    return OpenVINOExporter().export(kit_model(work / "kit"), work / "out", verify=False)


@needs_genai
class TestOpenVINORuntimeContract(InferenceRuntimeContract):
    @pytest.fixture(scope="class")
    def inference_runtime(self) -> InferenceRuntime:
        return OpenVINORuntime()

    @pytest.fixture(scope="class")
    def runtime_model(self, smol_openvino_kv: Path) -> ResolvedModel:
        return ir_model(smol_openvino_kv / "openvino-kv-fp16")


@pytest.fixture(scope="module")
def fp16(smol_openvino_kv: Path) -> Iterator[Generator]:
    loaded = load_planned(
        OpenVINORuntime(), ir_model(smol_openvino_kv / "openvino-kv-fp16"), mock_runtime("cpu"), 512
    )
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference() -> Iterator[Generator]:
    """The transformers runtime on SmolLM2's HF directory, planned the same way."""
    from hwkit.jobs import load_generator

    loaded = load_generator("smollm2-135m-instruct", runtime=mock_runtime("cpu"), context=512)
    yield loaded
    loaded.close()


@needs_genai
def test_greedy_replies_equal_the_transformers_runtime(
    fp16: Generator, reference: Generator
) -> None:
    """Same rendered prompt, same greedy reply, same counts and finish reason (the plan is
    float32 on the mock CPU: f32 compute and an f32 KV cache in OpenVINO)."""
    assert isinstance(fp16, OpenVINOGenerator) and fp16.plan.dtype == "float32"
    reasons = set()
    for chat in CHATS:
        ours, theirs = fp16.prompt(chat, NEW), reference.prompt(chat, NEW)
        assert list(ours.ids.input_ids.data[0]) == theirs.ids[0].tolist()
        mine = fp16.generate(ours, GenerationParams(NEW))
        want = reference.generate(theirs, GenerationParams(NEW))
        assert mine == want, chat
        reasons.add(mine.finish_reason)
    assert reasons == {"stop", "length"}  # "Say just: yes" ends its turn early


@needs_genai
def test_chat_template_comes_from_the_tokenizer_ir(fp16: Generator) -> None:
    assert isinstance(fp16, OpenVINOGenerator)
    text = fp16.pipeline.get_tokenizer().apply_chat_template(CHATS[2], add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Ada")
    assert text.endswith("<|im_start|>assistant\n")


@needs_genai
def test_closing_a_stream_early_stops_the_generation(fp16: Generator) -> None:
    stream = fp16.stream(fp16.prompt(CHATS[1], 200), GenerationParams(200))
    assert next(stream)
    stream.close()  # waits for the worker, which stops at the next token
    assert not fp16.lock.locked()
    result = StreamResult()
    text = "".join(fp16.stream(fp16.prompt(CHATS[0], 4), GenerationParams(4), result))
    assert text and result.completion_tokens == 4 and result.finish_reason == "length"


@needs_genai
def test_sampling_with_a_temperature(fp16: Generator) -> None:
    params = GenerationParams(8, temperature=0.9, top_p=0.9)
    completion = fp16.generate(fp16.prompt(CHATS[0], 8), params)
    assert completion.text and 1 <= completion.completion_tokens <= 8


@needs_genai
def test_int8_ir_answers_as_its_export_measured(smol_openvino_kv: Path) -> None:
    """The INT8 IR through GenAI: every reply non-empty, and as many replies equal to the
    float32 torch model's greedy ones as the export's own check counted (export.json),
    whatever that count is: the same IR run by GenAI and by the exporter's loop."""
    from hwkit.models import resolve
    from hwkit.plugins.exporters.openvino_stateful import (
        GREEDY_PROMPTS,
        GREEDY_TOKENS,
        torch_greedy,
    )
    from hwkit.plugins.exporters.verify import PROMPTS
    from hwkit.plugins.runtimes.transformers import load_causal_lm, load_tokenizer

    folder = smol_openvino_kv / "openvino-kv-int8"
    figures = json.loads((folder / "export.json").read_text())
    int8 = load_planned(OpenVINORuntime(), ir_model(folder), mock_runtime("cpu"), 512)
    try:
        chats = [[{"role": "user", "content": user}] for user, _ in PROMPTS[:GREEDY_PROMPTS]]
        prompts = [int8.prompt(chat, GREEDY_TOKENS) for chat in chats]
        replies = [int8.generate(p, GenerationParams(GREEDY_TOKENS)) for p in prompts]
    finally:
        int8.close()
    source = resolve("smollm2-135m-instruct")
    tokenizer = load_tokenizer(source)
    reference = torch_greedy(
        load_causal_lm(source), [list(p.ids.input_ids.data[0]) for p in prompts]
    )
    equal = 0
    for ref, reply in zip(reference, replies, strict=True):
        assert reply.text.strip() and reply.completion_tokens >= 1
        equal += reply.text == tokenizer.decode(ref.tokens, skip_special_tokens=True)
    assert equal == figures["greedy_equal"], (equal, figures)


@needs_genai
def test_a_full_sequence_ir_is_refused_in_one_line(full_sequence_ir: Path) -> None:
    device = mock_device("cpu", present=True)
    plan = _plan()
    with pytest.raises(UsageError) as err:
        OpenVINORuntime().load(ir_model(full_sequence_ir), plan, device)
    line = err.value.one_line()
    assert "\n" not in line
    assert "full-sequence OpenVINO IR" in line and "cpu:0" in line and full_sequence_ir.name in line
    assert line.endswith("(re-export it with: hwkit export openvino SOURCE --kv-cache)")


def test_missing_openvino_genai_names_the_extra(
    full_sequence_ir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino_genai", None)  # import fails
    with pytest.raises(UnavailableError, match=r"the openvino runtime needs openvino_genai") as err:
        OpenVINORuntime().load(ir_model(full_sequence_ir), _plan(), mock_device("cpu"))
    assert err.value.hint == "pip install 'hwkit[export]'"


@needs_genai
def test_a_device_openvino_does_not_see_is_refused(smol_openvino_kv: Path) -> None:
    """hwkit's mock NPU (a Lunar Lake profile) on this machine, whose OpenVINO lists no NPU."""
    import openvino as ov

    if "NPU" in ov.Core().available_devices:
        pytest.skip("this machine has an NPU")
    npu = mock_device("intel-npu-lunar-lake", present=True)
    model = ir_model(smol_openvino_kv / "openvino-kv-fp16")
    with pytest.raises(UnavailableError, match=r"OpenVINO does not see NPU for npu:0") as err:
        OpenVINORuntime().load(model, _plan(), npu)
    assert "openvino-kv-fp16" in err.value.message and "lists CPU" in str(err.value.hint)


def test_pipeline_properties_follow_the_plan() -> None:
    plan = _plan(max_seq_len=1024)
    assert pipeline_properties(plan, "CPU") == {
        "INFERENCE_PRECISION_HINT": "f32",
        "KV_CACHE_PRECISION": "f32",
    }
    npu = pipeline_properties(plan, "NPU")
    assert (npu["MAX_PROMPT_LEN"], npu["MIN_RESPONSE_LEN"]) == (768, 256)
    assert "CACHE_DIR" in npu and "INFERENCE_PRECISION_HINT" not in npu
    gpu = pipeline_properties(plan.model_copy(update={"dtype": "float16"}), "GPU.1")
    assert gpu["INFERENCE_PRECISION_HINT"] == "f16" and "KV_CACHE_PRECISION" not in gpu
    assert npu_lengths(4096) == (3840, 256) and sum(npu_lengths(128)) == 128


def _plan(max_seq_len: int = 256) -> Plan:
    """A float32 ``generate`` plan for SmolLM2 on the mock CPU (what the runtime is handed)."""
    from hwkit.allocator import Job, ModelSpec
    from hwkit.jobs import place
    from hwkit.models import resolve

    spec = ModelSpec.from_pretrained(resolve("smollm2-135m-instruct").path)
    job = Job("generate", spec, seq_len=max_seq_len, effective_batch=1, runtimes=("openvino",))
    return place(job, mock_runtime("cpu")).plan


@pytest.fixture(scope="module")
def kit_kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    """The kit's small model as an FP16 KV-cache IR (unverified: cheap), loaded on a CPU."""
    from hwkit.plugins.exporters import OpenVINOExporter

    if not is_available("openvino_tokenizers"):
        pytest.skip(f"openvino_tokenizers is not installed ({install_hint('openvino_tokenizers')})")
    work = tmp_path_factory.mktemp("kit-kv")
    OpenVINOExporter().export(
        kit_model(work / "kit"), work / "out", precision="fp16", kv_cache=True, verify=False
    )
    folder = work / "out" / "openvino-kv-fp16"
    loaded = load_planned(OpenVINORuntime(), ir_model(folder), mock_runtime("cpu"), 64)
    yield loaded
    loaded.close()


@needs_genai
def test_a_seed_gives_the_same_sample(kit_kv: Generator) -> None:
    prompt = kit_kv.prompt([{"role": "user", "content": "Hi"}], 8)

    def sampled(seed: int) -> str:
        return kit_kv.generate(prompt, GenerationParams(8, temperature=1.0, seed=seed)).text

    first = sampled(7)
    assert sampled(7) == first and sampled(7 + 2**32) == first  # GenAI's seeds are 32-bit
    assert any(sampled(seed) != first for seed in (8, 9, 10))


@needs_genai
def test_unseeded_samples_differ(kit_kv: Generator) -> None:
    """GenAI seeds every request with 0 unless told: unseeded requests get a fresh seed, so
    sampling twice is not the same draw twice."""
    prompt = kit_kv.prompt([{"role": "user", "content": "Hi"}], 8)
    replies = {kit_kv.generate(prompt, GenerationParams(8, temperature=1.0)).text for _ in range(4)}
    assert len(replies) > 1
