"""The built-in ``llama.cpp`` inference runtime on SmolLM2's GGUF, checked against
llama-cpp-python called directly; and its refusals (architectures llama.cpp cannot load,
GGUFs without a chat template, devices it cannot run on), each one line.

The conformance kit runs over it as a registered runtime (tests/core/testing).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import ConfigError, UsageError
from hwkit.inference import GenerationParams, StreamResult
from hwkit.models import SMOLLM2, ResolvedModel, resolve
from hwkit.plan import Plan
from hwkit.plugins.runtimes.llama_cpp import (
    LlamaCppGenerator,
    LlamaCppRuntime,
    physical_cores,
    placement,
)
from hwkit.testing import MockDevice, mock_device

llama_cpp = pytest.importorskip("llama_cpp")

CONTEXT = 512
SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n"
)


def chat(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def rendered(question: str) -> str:
    """SmolLM2's chat template applied by hand: what the GGUF's template must produce."""
    return f"{SYSTEM}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def plan_for(model: ResolvedModel, device: MockDevice, context: int = CONTEXT) -> Plan:
    return Plan(
        job="generate",
        model=model.label,
        device=device.id,
        device_name=device.name,
        profile=device.profile.name,
        runtime="llama.cpp",
        max_seq_len=context,
    )


def tiny_gguf(path: Path, *, arch: str = "llama", template: str | None = None) -> Path:
    """A GGUF of a one-layer, eight-token model (random weights) that llama.cpp loads when
    ``arch`` is one it knows."""
    import gguf
    import numpy as np

    embd, ff, vocab = 8, 16, 8
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(64)
    writer.add_embedding_length(embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"\u2581{c}" for c in "abcde"])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([2, 3, 3] + [1] * 5)  # unknown, control, control, normal...
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if template is not None:
        writer.add_chat_template(template)
    rng = np.random.default_rng(0)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float32))

    tensor("token_embd.weight", vocab, embd)
    tensor("output_norm.weight", embd)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        tensor(f"blk.0.{name}.weight", embd, embd)
    tensor("blk.0.attn_norm.weight", embd)
    tensor("blk.0.ffn_norm.weight", embd)
    tensor("blk.0.ffn_gate.weight", ff, embd)
    tensor("blk.0.ffn_up.weight", ff, embd)
    tensor("blk.0.ffn_down.weight", embd, ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def cpu() -> MockDevice:
    return mock_device("cpu", present=True)


@pytest.fixture(scope="module")
def smollm2() -> ResolvedModel:
    return resolve(SMOLLM2.gguf_path())


@pytest.fixture(scope="module")
def generator(smollm2: ResolvedModel, cpu: MockDevice) -> Iterator[LlamaCppGenerator]:
    loaded = LlamaCppRuntime().load(smollm2, plan_for(smollm2, cpu), cpu)
    assert isinstance(loaded, LlamaCppGenerator)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def reference(smollm2: ResolvedModel) -> Iterator[Any]:
    """llama-cpp-python on the same file, called directly."""
    llm = llama_cpp.Llama(
        str(smollm2.path),
        n_ctx=CONTEXT,
        n_gpu_layers=0,
        n_threads=physical_cores(),
        verbose=False,
    )
    yield llm
    llm.close()


def direct(reference: Any, question: str, max_tokens: int) -> dict[str, Any]:
    out: dict[str, Any] = reference.create_completion(
        rendered(question), max_tokens=max_tokens, temperature=0.0
    )
    return out


def test_registered_for_gguf_files(smollm2: ResolvedModel) -> None:
    from hwkit.runtime import current

    assert current().plugins.runtimes.get("llama.cpp") is LlamaCppRuntime
    assert LlamaCppRuntime().accepts(smollm2)
    assert not LlamaCppRuntime().accepts(ResolvedModel("m", Path("m"), "hf"))


def test_the_gguf_chat_template_renders_the_prompt(
    generator: LlamaCppGenerator, reference: Any
) -> None:
    question = "What is the capital of France?"
    prompt = generator.prompt(chat(question), 8)
    expected = reference.tokenize(rendered(question).encode(), add_bos=False, special=True)
    assert prompt.ids == expected and prompt.prompt_tokens == len(expected)
    assert prompt.ids[0] == reference.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]
    assert generator.llm.n_threads == generator.llm.n_threads_batch == physical_cores()
    assert generator.plan.max_seq_len == CONTEXT


def test_greedy_reply_is_llama_cpps_own_and_length_counts_tokens(
    generator: LlamaCppGenerator, reference: Any
) -> None:
    question = "What is the capital of France?"  # a long answer with an accented letter
    want = direct(reference, question, 12)
    result = StreamResult()
    pieces = list(
        generator.stream(generator.prompt(chat(question), 12), GenerationParams(), result)
    )
    assert len(pieces) > 1 and "".join(pieces) == want["choices"][0]["text"]
    assert "\u00c9" in "".join(pieces)
    assert want["choices"][0]["finish_reason"] == result.finish_reason == "length"
    assert result.completion_tokens == want["usage"]["completion_tokens"] == 12


def test_finish_reason_is_stop_at_the_end_of_turn(
    generator: LlamaCppGenerator, reference: Any
) -> None:
    question = "What is 2+2? Answer with one number."
    want = direct(reference, question, 24)
    completion = generator.generate(generator.prompt(chat(question), 24), GenerationParams(24))
    assert completion.text == want["choices"][0]["text"] and "4" in completion.text
    assert completion.finish_reason == want["choices"][0]["finish_reason"] == "stop"
    assert completion.completion_tokens == want["usage"]["completion_tokens"] < 24
    assert completion.prompt_tokens == want["usage"]["prompt_tokens"]


def test_length_at_a_small_max_new_tokens(generator: LlamaCppGenerator, reference: Any) -> None:
    question = "Write a long story about a dragon and a knight."
    want = direct(reference, question, 3)
    completion = generator.generate(generator.prompt(chat(question), 3), GenerationParams(3))
    assert completion.text == want["choices"][0]["text"]
    assert completion.finish_reason == "length" and completion.completion_tokens == 3


def test_sampling_with_a_temperature_gives_tokens(generator: LlamaCppGenerator) -> None:
    params = GenerationParams(max_new_tokens=4, temperature=0.8, top_p=0.9)
    completion = generator.generate(generator.prompt(chat("Tell me a joke."), 4), params)
    assert 0 < completion.completion_tokens <= 4


def test_prompts_over_the_planned_context_are_refused(generator: LlamaCppGenerator) -> None:
    with pytest.raises(UsageError, match=r"exceeds the planned context of 512") as info:
        generator.prompt(chat("word " * CONTEXT), 4)
    assert "\n" not in str(info.value) and "lower max_tokens" in str(info.value)
    fits = generator.prompt(chat("Hi"), 4)
    assert generator.prompt(chat("Hi"), CONTEXT - fits.prompt_tokens).prompt_tokens
    with pytest.raises(UsageError, match=r"plus max_tokens"):
        generator.prompt(chat("Hi"), CONTEXT - fits.prompt_tokens + 1)


def test_errors_in_generation_reach_the_consumer(generator: LlamaCppGenerator) -> None:
    prompt = generator.prompt(chat("Hi"), 2)
    prompt.ids = [10**9]  # no such token: llama.cpp refuses to decode it
    result = StreamResult()
    with pytest.raises(Exception) as info:
        list(generator.stream(prompt, GenerationParams(2), result))
    assert result.error is info.value
    assert not generator.lock.locked()
    ok = generator.generate(generator.prompt(chat("Hi"), 2), GenerationParams(2))
    assert ok.completion_tokens == 2  # the model still works afterwards


def test_an_architecture_llama_cpp_cannot_load_is_one_line(tmp_path: Path, cpu: MockDevice) -> None:
    model = resolve(tiny_gguf(tmp_path / "bogus.gguf", arch="bogusnet"))
    with pytest.raises(ConfigError) as info:
        LlamaCppRuntime().load(model, plan_for(model, cpu, 64), cpu)
    line = str(info.value)
    assert "\n" not in line and str(model.path) in line
    assert "architecture 'bogusnet'" in line
    assert "transformers runtime" in line and "hwkit export gguf" in line


def test_a_gguf_without_a_chat_template_is_refused(tmp_path: Path, cpu: MockDevice) -> None:
    model = resolve(tiny_gguf(tmp_path / "plain.gguf"))
    with pytest.raises(ConfigError, match=r"has no chat template") as info:
        LlamaCppRuntime().load(model, plan_for(model, cpu, 64), cpu)
    assert "\n" not in str(info.value) and "plain.gguf" in str(info.value)


@pytest.mark.parametrize(
    "template",
    [
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "{% for m in messages %}{{ m['content'] }}{% endfor %}",
    ],
    ids=["template-writes-bos", "vocab-adds-bos"],
)
def test_a_prompt_starts_with_one_bos(template: str, tmp_path: Path, cpu: MockDevice) -> None:
    """The tiny vocabulary adds a BOS (as Llama's does); a template may write it too."""
    model = resolve(tiny_gguf(tmp_path / "bos.gguf", template=template))
    loaded = LlamaCppRuntime().load(model, plan_for(model, cpu, 128), cpu)
    try:
        assert loaded.prompt(chat("a b"), 2).ids == [1, 3, 4]  # <s> a b
        # the model's context (64) is below the plan's here, and bounds prompts
        assert isinstance(loaded, LlamaCppGenerator) and loaded.context == (64, "model's")
        with pytest.raises(UsageError, match=r"exceeds the model's context of 64"):
            loaded.prompt(chat("a b"), 62)
    finally:
        loaded.close()
        loaded.close()  # closing twice is harmless


def test_cuda_without_gpu_offload_is_refused(
    smollm2: ResolvedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    h200 = mock_device("h200", present=True)
    with pytest.raises(UsageError) as info:
        LlamaCppRuntime().load(smollm2, plan_for(smollm2, h200), h200)
    line = str(info.value)
    assert "\n" not in line and smollm2.given in line and "cuda:0" in line
    assert "CUDA build of llama-cpp-python" in line and "CPU" in line


def test_cuda_with_gpu_offload_puts_every_layer_on_the_planned_gpu(
    smollm2: ResolvedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    second = mock_device("h200", index=1, present=True)
    where = placement(llama_cpp, smollm2, second)
    assert where["n_gpu_layers"] == -1 and where["main_gpu"] == 1
    assert where["split_mode"] == llama_cpp.LLAMA_SPLIT_MODE_NONE


def test_a_device_without_llama_cpp_names_what_it_runs(smollm2: ResolvedModel) -> None:
    npu = mock_device("intel-npu-lunar-lake", present=True)
    with pytest.raises(UsageError) as info:
        LlamaCppRuntime().load(smollm2, plan_for(smollm2, npu), npu)
    line = str(info.value)
    assert "\n" not in line and smollm2.given in line and npu.id in line
    assert "runs: openvino" in line


def test_missing_llama_cpp_python_names_the_extra(
    smollm2: ResolvedModel, cpu: MockDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from hwkit.errors import UnavailableError

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if not installed
    with pytest.raises(UnavailableError) as info:
        LlamaCppRuntime().load(smollm2, plan_for(smollm2, cpu), cpu)
    assert "llama_cpp" in str(info.value) and "pip install 'hwkit[export]'" in str(info.value)


def test_importing_the_plugin_does_not_import_llama_cpp() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hwkit.plugins.runtimes as r, hwkit.plugins.runtimes.llama_cpp; "
        "assert 'llama_cpp' not in sys.modules and 'gguf' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_close_frees_the_model(smollm2: ResolvedModel, cpu: MockDevice) -> None:
    own = LlamaCppRuntime().load(smollm2, plan_for(smollm2, cpu, 64), cpu)
    assert own.generate(own.prompt(chat("Hi"), 1), GenerationParams(1)).completion_tokens == 1
    own.close()
    with pytest.raises(UsageError, match=r"is closed"):
        own.prompt(chat("Hi"), 1)


def test_a_seed_gives_the_same_sample(generator: LlamaCppGenerator) -> None:
    prompt = generator.prompt(chat("Tell me a joke."), 8)

    def sampled(seed: int) -> str:
        return generator.generate(prompt, GenerationParams(8, temperature=1.0, seed=seed)).text

    first = sampled(7)
    assert sampled(7) == first
    assert any(sampled(seed) != first for seed in (8, 9, 10))
    greedy = generator._completion_kwargs(prompt, GenerationParams(8, seed=7))
    assert "seed" not in greedy  # greedy ignores it
