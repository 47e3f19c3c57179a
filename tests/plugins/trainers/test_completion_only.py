"""SFT's ``completion_only_loss``: rows become trl prompt/completion pairs split before the
last reply, and ``hwkit eval`` scores only that reply, as the trainer did."""

from __future__ import annotations

from typing import Any

import pytest

from hwkit.errors import ConfigError
from hwkit.plugins.trainers.config import SFTConfig
from hwkit.plugins.trainers.sft import SFTTrainerPlugin, split_last_reply

ROW: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Answer from the passages."},
        {"role": "user", "content": "Passages:\n[1] Paris is the capital of France.\nQ: capital?"},
        {"role": "assistant", "content": "Paris [1]"},
    ]
}


def test_rows_split_before_the_last_reply() -> None:
    plugin = SFTTrainerPlugin(SFTConfig(completion_only_loss=True))
    train, evals = plugin._datasets([ROW, ROW], [ROW])
    assert train.column_names == ["prompt", "completion"] and evals is not None
    assert train[0]["prompt"] == ROW["messages"][:2]
    assert train[0]["completion"] == [ROW["messages"][2]]
    assert len(evals) == 1
    # off by default: the conversations go to trl as they are
    plain, _ = SFTTrainerPlugin(SFTConfig())._datasets([ROW], None)
    assert plain.column_names == ["messages"]


def test_a_row_without_a_reply_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="completion_only_loss needs rows"):
        split_last_reply([{"role": "user", "content": "hi"}])
    with pytest.raises(ConfigError, match=r"\['assistant'\]"):
        split_last_reply([{"role": "assistant", "content": "no prompt"}])


@pytest.mark.slow
def test_eval_loss_covers_the_reply_tokens_only() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hwkit.models import resolve_model
    from hwkit.plugins.trainers.evaluate import completion_logp, sft_loss

    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompt, reply = split_last_reply(ROW["messages"])
    with torch.no_grad():
        only = sft_loss(model, tokenizer, [ROW], 512, completion_only=True)
        whole = sft_loss(model, tokenizer, [ROW], 512)
        logp = completion_logp(model, tokenizer, prompt, reply, 512)
    full = tokenizer.apply_chat_template(ROW["messages"], tokenize=True, return_dict=True)
    head = tokenizer.apply_chat_template(
        prompt, tokenize=True, add_generation_prompt=True, return_dict=True
    )
    n_reply = len(full["input_ids"]) - len(head["input_ids"])
    assert n_reply > 2
    assert only == pytest.approx(-logp / n_reply, rel=1e-4)
    assert abs(only - whole) > 1e-3  # the prompt tokens are left out
