"""The built-in ``transformers`` inference runtime: the conformance kit on a mock device,
and what is its own (LoRA runs merged on load, tokenizers, devices without torch)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import NotFoundError, UsageError
from hwkit.inference import Completion, GenerationParams, InferenceRuntime, StreamResult
from hwkit.models import resolve
from hwkit.plugins.runtimes.batching import BatchRecord
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


# -- dynamic batching ------------------------------------------------------------------------
# Few tokens each: a CPU shared with other work decodes a few tokens a second at worst.
QUESTIONS = [
    ("What is the capital of France?", 10),  # ends at its end of turn
    ("Write a haiku about the sea.", 5),  # ends at max_new_tokens
    ("Hi", 7),
    ("Say just: yes", 8),
]


@pytest.fixture(scope="module")
def batched() -> Iterator[TransformersGenerator]:
    """SmolLM2 in float32 on a mock CPU, planned for 4 concurrent sequences."""
    from hwkit.jobs import load_generator

    generator = load_generator(MODEL, runtime=mock_runtime("cpu"), context=256, sequences=4)
    assert isinstance(generator, TransformersGenerator)
    assert generator.plan.dtype == "float32" and generator.plan.micro_batch == generator.batch == 4
    yield generator
    generator.close()


def _ask(generator: TransformersGenerator, text: str, n: int, **sampling: Any) -> Completion:
    prompt = generator.prompt([{"role": "user", "content": text}], n)
    return generator.generate(prompt, GenerationParams(n, **sampling))


def _records(generator: TransformersGenerator, last: int) -> list[BatchRecord]:
    """The last batches, once the running one (if any) has been recorded."""
    assert generator.batcher.wait_idle(timeout=120)
    return list(generator.batcher.records)[-last:]


def _together(
    generator: TransformersGenerator, asks: list[tuple[str, int, dict[str, Any]]]
) -> list[Completion]:
    """``asks`` sent from one thread each, at once."""
    with ThreadPoolExecutor(max_workers=len(asks)) as pool:
        futures = [pool.submit(_ask, generator, text, n, **kw) for text, n, kw in asks]
        return [f.result(timeout=600) for f in futures]


@contextlib.contextmanager
def gathering(generator: TransformersGenerator, seconds: float) -> Iterator[None]:
    """The scheduler waits up to ``seconds`` for a batch to fill (deterministic batches)."""
    batcher = generator.batcher
    before = batcher.gather_s, batcher.gather_max_s
    batcher.gather_s = batcher.gather_max_s = seconds
    try:
        yield
    finally:
        batcher.gather_s, batcher.gather_max_s = before


def test_batched_greedy_equals_each_request_alone(batched: TransformersGenerator) -> None:
    import torch

    alone = [_ask(batched, text, n) for text, n in QUESTIONS]
    assert [r.rows for r in _records(batched, 4)] == [1, 1, 1, 1]
    # alone is what generate gives without any batching machinery
    tok = batched.tokenizer
    prompt = batched.prompt([{"role": "user", "content": QUESTIONS[0][0]}], 10)
    with torch.inference_mode():
        out = batched.model.generate(
            input_ids=prompt.ids,
            attention_mask=torch.ones_like(prompt.ids),
            max_new_tokens=10,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
        )
    new = out[0, prompt.prompt_tokens :]
    assert alone[0].text == tok.decode(new, skip_special_tokens=True)
    assert alone[0].completion_tokens == len(new)

    with gathering(batched, 60):  # the 4th request fills the batch: it starts then
        together = _together(batched, [(text, n, {}) for text, n in QUESTIONS])
    assert _records(batched, 1)[0].rows == 4  # one left-padded batch of four prompts
    assert len({r.prompt_tokens for r in together}) > 1  # of different lengths
    assert together == alone  # text, token counts and finish reasons, row by row
    assert alone[0].finish_reason == "stop" and alone[0].completion_tokens < 10
    assert alone[1].finish_reason == "length" and alone[1].completion_tokens == 5


def test_sampling_settings_batch_apart(batched: TransformersGenerator) -> None:
    greedy = [("Hi", 3, {}), ("Say just: yes", 3, {})]
    sampled = [("Hi", 3, {"temperature": 0.8, "top_p": 0.9})]
    with gathering(batched, 1.0):
        replies = _together(batched, [greedy[0], sampled[0], greedy[1]])
    rows = sorted(r.rows for r in _records(batched, 2))
    assert rows == [1, 2]  # the two greedy requests together, the sampled one apart
    assert replies[0] == _ask(batched, "Hi", 3) and replies[2] == _ask(batched, "Say just: yes", 3)
    assert 1 <= replies[1].completion_tokens <= 3


def test_a_request_arriving_during_a_running_batch_is_served(
    batched: TransformersGenerator,
) -> None:
    first_alone = _ask(batched, "Count from 1 to 20.", 8)
    second_alone = _ask(batched, "Hi", 4)
    assert batched.batcher.wait_idle(timeout=120)
    batches = len(batched.batcher.records)
    first = StreamResult()
    stream = batched.stream(
        batched.prompt([{"role": "user", "content": "Count from 1 to 20."}], 8),
        GenerationParams(8),
        first,
    )
    pieces = [next(stream)]  # its batch is decoding now
    assert batched.batcher.pending() == (0, 1)
    second = _ask(batched, "Hi", 4)  # waits for that batch, then runs in the next
    pieces.extend(stream)
    assert "".join(pieces) == first_alone.text and first.completion_tokens == 8
    assert second == second_alone
    assert batched.batcher.wait_idle(timeout=120)
    assert len(batched.batcher.records) == batches + 2


def test_closing_a_stream_stops_its_row_and_not_the_others(
    batched: TransformersGenerator,
) -> None:
    long = [{"role": "user", "content": "Count from 1 to 200, separated by commas."}]
    other_alone = _ask(batched, "Count from 1 to 20.", 12)
    with gathering(batched, 2.0), ThreadPoolExecutor(max_workers=1) as pool:
        other = pool.submit(_ask, batched, "Count from 1 to 20.", 12)
        abandoned = batched.stream(batched.prompt(long, 200), GenerationParams(200))
        assert next(abandoned)  # decoding, in one batch with the other request
        abandoned.close()
        assert other.result(timeout=600) == other_alone  # its row ran to its own end
    (record,) = _records(batched, 1)
    assert record.rows == 2 and record.steps <= 12  # not 200: the closed row stopped
    # alone, a closed stream ends its batch at the next step
    alone = batched.stream(batched.prompt(long, 200), GenerationParams(200))
    assert next(alone)
    alone.close()
    assert _records(batched, 1)[0].steps < 20


def test_close_ends_the_scheduler_and_fails_what_waits(tiny: Path) -> None:
    from hwkit.jobs import load_generator

    generator = load_generator(tiny, runtime=mock_runtime("cpu"), context=64, sequences=2)
    assert isinstance(generator, TransformersGenerator)
    hi = generator.prompt([{"role": "user", "content": "Hi"}], 2)
    assert generator.generate(hi, GenerationParams(2)).completion_tokens >= 1
    thread = generator.batcher._thread
    assert thread is not None and thread.is_alive()
    generator.close()
    assert not thread.is_alive() and generator.model is None
    with pytest.raises(UsageError, match=r"is closed"):
        generator.generate(hi, GenerationParams(2))


def test_logprobs_are_the_models_own_for_each_chosen_token(
    batched: TransformersGenerator,
) -> None:
    """What adaptive retrieval reads: per new token, log p(token | prefix), as a forward
    pass over prompt + reply gives it; a request without ``logprobs`` gets None."""
    import torch

    from hwkit.inference import StreamResult

    prompt = batched.prompt([{"role": "user", "content": "Name a colour."}], 6)
    result = StreamResult()
    text = "".join(batched.stream(prompt, GenerationParams(6, logprobs=True), result))
    assert result.logprobs is not None and len(result.logprobs) == result.completion_tokens
    new = batched.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([prompt.ids, new], dim=1)
    with torch.inference_mode():
        logits = batched.model(ids.to(batched.device.torch_device())).logits.float()
    n = int(prompt.ids.shape[1])
    want = torch.log_softmax(logits[0, n - 1 : -1], dim=-1).gather(1, new[0][:, None])[:, 0]
    k = min(len(want), len(result.logprobs))  # re-tokenising the text may merge the EOS
    assert result.logprobs[:k] == pytest.approx(want[:k].tolist(), abs=1e-3)
    assert all(x <= 0 for x in result.logprobs)
    plain = StreamResult()
    "".join(batched.stream(prompt, GenerationParams(6), plain))
    assert plain.logprobs is None and batched.gives_logprobs


def test_a_seed_gives_the_same_sample_and_decodes_alone(batched: TransformersGenerator) -> None:
    """GenerationParams.seed: the same seed samples the same reply (batched with others or
    not), another seed another one; torch's own generator is left as it was."""
    import torch

    joke = "Tell me a joke."

    def sampled(seed: int | None) -> Completion:
        return _ask(batched, joke, 6, temperature=1.0, seed=seed)

    first = sampled(7)
    assert sampled(7) == first
    assert any(sampled(seed).text != first.text for seed in (8, 9, 10))
    seeded = (joke, 6, {"temperature": 1.0, "seed": 7})
    with gathering(batched, 0.5):  # same seed twice, and an unseeded sample: none share
        replies = _together(batched, [seeded, seeded, (joke, 6, {"temperature": 1.0})])
    assert [r.rows for r in _records(batched, 3)] == [1, 1, 1]
    assert replies[0] == replies[1] == first
    # greedy ignores the seed; a seeded request restores torch's global generator after it
    assert _ask(batched, "Hi", 3, seed=5) == _ask(batched, "Hi", 3)
    torch.manual_seed(123)
    want = torch.rand(4)
    torch.manual_seed(123)
    sampled(7)
    _records(batched, 1)  # the scheduler restores it once the batch has ended
    assert torch.equal(torch.rand(4), want)
