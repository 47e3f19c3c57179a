"""The model-backed rewards: ``reward_model`` against the model's own logits, and
``llm_judge`` through the real local SmolLM2 and hwkit's generation runtimes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import ConfigError, NotFoundError
from hwkit.plugins.rewards.composite import RewardComponent
from hwkit.plugins.rewards.llm_judge import LLMJudgeReward, parse_grade
from hwkit.plugins.rewards.reward_model import RewardModelReward

WORDS = [
    "the",
    "a",
    "score",
    "is",
    "high",
    "low",
    "good",
    "bad",
    "profile",
    "researcher",
    "json",
    "answer",
    "yes",
    "no",
]
PROMPTS = ["score the profile", "is it good", "answer yes or no", "the profile", "json"]
COMPLETIONS = ["high score", "bad", "yes the answer is yes", "a researcher profile", "no"]
ROWS: list[dict[str, Any]] = [{} for _ in PROMPTS]


def _tiny_classifier(path: Path, num_labels: int, *, safetensors: bool = True) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(path)
    if not safetensors:  # pickled weights only, as older checkpoints ship
        for weights in path.glob("*.safetensors"):
            weights.unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def _logits(path: Path, pair: bool = True) -> Any:
    """The model's own logits, one text (pair) at a time: no padding involved."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    rows = []
    with torch.inference_mode():
        for p, c in zip(PROMPTS, COMPLETIONS, strict=True):
            encoded = (
                tokenizer(p, c, return_tensors="pt") if pair else tokenizer(c, return_tensors="pt")
            )
            rows.append(model(**encoded).logits[0])
    return torch.stack(rows)


def test_a_single_logit_head_gives_its_sigmoid(tmp_path: Path) -> None:
    import torch

    path = _tiny_classifier(tmp_path / "rm", 1)
    expected = torch.sigmoid(_logits(path)[:, 0]).tolist()
    reward = RewardModelReward(path=str(path), batch_size=2)  # 5 texts: batches of 2, 2, 1
    assert reward.model is None  # loaded on first use
    got = reward.score_batch(PROMPTS, COMPLETIONS, ROWS)
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(round(v, 6) for v in got)) > 1  # a real, input-dependent score
    assert reward.score(PROMPTS[2], COMPLETIONS[2], {}) == pytest.approx(expected[2], abs=1e-5)
    raw = RewardModelReward(path=str(path), normalize="none", pair=False)
    assert raw.score_batch(PROMPTS, COMPLETIONS, ROWS) == pytest.approx(
        _logits(path, pair=False)[:, 0].tolist(), abs=1e-5
    )
    reward.close()
    assert reward.model is None


def test_a_multi_label_head_needs_a_label(tmp_path: Path) -> None:
    import torch

    path = _tiny_classifier(tmp_path / "rm3", 3)
    logits = _logits(path)
    soft = RewardModelReward(path=str(path), label=2, normalize="softmax")
    assert soft.score_batch(PROMPTS, COMPLETIONS, ROWS) == pytest.approx(
        torch.softmax(logits, dim=-1)[:, 2].tolist(), abs=1e-5
    )
    sig = RewardModelReward(path=str(path), label=1)
    assert sig.score_batch(PROMPTS, COMPLETIONS, ROWS) == pytest.approx(
        torch.sigmoid(logits[:, 1]).tolist(), abs=1e-5
    )
    with pytest.raises(ConfigError, match="has 3 labels"):
        RewardModelReward(path=str(path)).score("p", "c", {})
    with pytest.raises(ConfigError, match="out of range"):
        RewardModelReward(path=str(path), label=3).score("p", "c", {})


def test_only_local_safetensors_are_loaded(tmp_path: Path) -> None:
    pickled = _tiny_classifier(tmp_path / "pickled", 1, safetensors=False)
    assert not list(pickled.glob("*.safetensors")) and (pickled / "pytorch_model.bin").is_file()
    with pytest.raises(NotFoundError, match="no safetensors weights"):
        RewardModelReward(path=str(pickled)).score("p", "c", {})
    with pytest.raises(NotFoundError, match="does not exist"):
        RewardModelReward(path=str(tmp_path / "absent"))
    with pytest.raises(NotFoundError, match="does not exist"):
        RewardModelReward(path="OpenAssistant/reward-model-deberta-v3-large")  # never a hub id
    with pytest.raises(ConfigError, match="unknown option 'model'"):
        RewardModelReward(model=str(pickled))


def test_parse_grade() -> None:
    assert parse_grade("7") == 0.7
    assert parse_grade(" 8.5/10, good") == 0.85
    assert parse_grade("Grade: 10") == 1.0
    assert parse_grade("0") == 0.0
    for bad in ("excellent", "", "11", "-2"):
        with pytest.raises(ValueError):
            parse_grade(bad)


def test_the_judge_template_keeps_other_braces() -> None:
    judge = LLMJudgeReward(
        model="smollm2-135m-instruct", template='Q: {prompt}\nA: {completion}\n{"grade": N}'
    )
    assert judge.judge_prompt("p?", "c.") == 'Q: p?\nA: c.\n{"grade": N}'
    with pytest.raises(ConfigError, match="must contain"):
        LLMJudgeReward(model="x", template="no placeholder")


@pytest.mark.slow
def test_the_llm_judge_grades_with_the_local_smollm2(tmp_path: Path) -> None:
    from hwkit.testing import mock_runtime

    judge = LLMJudgeReward(
        model="smollm2-135m-instruct", runtime=mock_runtime("cpu"), context=512, max_new_tokens=4
    )
    component = RewardComponent(judge, weight=1.0, fallback=-1.0)
    prompts = ["What is the capital of France?", "What is 2 + 2?", "Name a colour."]
    completions = ["Paris.", "5", "Blue."]
    try:
        values = component(prompts, completions, [{}, {}, {}])
        replies = list(judge.replies)
    finally:
        judge.close()
    assert judge.generator is None
    assert len(values) == 3 and len(replies) == 3
    assert all(reply for reply in replies)  # the model answered something each time
    for value, failed, reply in zip(values, component.last_failed, replies, strict=True):
        if failed:
            assert value == -1.0  # the fallback, counted
        else:
            assert 0.0 <= value <= 1.0
            assert value == parse_grade(reply)
    assert component.failures == sum(component.last_failed)
    assert not any(math.isnan(v) for v in values)
