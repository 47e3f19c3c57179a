"""``hwkit chat`` without ``--url``: the real SmolLM2-135M-Instruct, loaded locally.

chat_loop loads the model through its ``generate`` plan (``hwkit.jobs.load_generator``; on a
CPU the transformers runtime in float32, or bfloat16 where the CPU has bf16 instructions) and
generates greedily (the runtime samples only when given a temperature, and chat passes none),
so a reply is deterministic and must equal transformers' own greedy ``generate`` on the same
chat-template prompt, in the dtype the plan chose.
"""

# ruff: noqa: F811  (pytest fixtures imported from the export fixtures module)
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import EXIT_NOT_FOUND, UsageError
from tests.cli import run_hwkit
from tests.plugins.exporters.test_export_fixtures import MODEL, smol  # noqa: F401

MAX_TOKENS = 12
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def reference(smol: Path) -> Any:
    """``reply(messages, dtype=None)``: what transformers' greedy generate answers, decoded
    like chat, in ``dtype`` (default: the one a fresh process's plan chooses, as the CLI's
    subprocess does; bfloat16 and float32 answer differently)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hwkit import jobs
    from hwkit.allocator import Job, ModelSpec
    from hwkit.runtime import Runtime

    spec = ModelSpec.from_pretrained(smol)
    job = Job("generate", spec, seq_len=jobs.DEFAULT_CONTEXT, runtimes=("transformers",))
    planned = jobs.place(job, Runtime.load()).plan.dtype
    tok = AutoTokenizer.from_pretrained(str(smol))
    models: dict[str, Any] = {}

    def reply(messages: list[dict[str, str]], dtype: str | None = None) -> str:
        dtype = dtype or planned
        if dtype not in models:
            models[dtype] = AutoModelForCausalLM.from_pretrained(
                str(smol), dtype=getattr(torch, dtype)
            ).eval()
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = models[dtype].generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
        return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    return reply


@pytest.mark.slow
def test_one_shot_message_prints_the_greedy_reply(smol: Path, reference: Any) -> None:
    proc = run_hwkit(
        "chat",
        "--model",
        MODEL,
        "--message",
        QUESTION,
        "--max-tokens",
        str(MAX_TOKENS),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    want = reference([{"role": "user", "content": QUESTION}])
    assert want.strip(), "the reference reply is empty; the comparison would prove nothing"
    assert proc.stdout == f"{want}\n"  # no prompt marker in --message mode, logs go to stderr


@pytest.mark.slow
def test_interactive_loop_keeps_history_and_ends_on_eof(
    smol: Path, reference: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hwkit.plugins.runtimes.transformers import TransformersGenerator
    from hwkit.plugins.serving.chat import chat_loop

    seen: list[list[dict[str, str]]] = []
    dtypes: set[str] = set()  # what this process's plan chose (its runtime may be a test's)
    real_prompt = TransformersGenerator.prompt

    def spy(self: TransformersGenerator, messages: list[dict[str, str]], n: int) -> Any:
        seen.append([dict(m) for m in messages])
        dtypes.add(self.plan.dtype)
        return real_prompt(self, messages, n)

    monkeypatch.setattr(TransformersGenerator, "prompt", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hi!\n\nName a colour.\n"))  # then EOF
    out = io.StringIO()
    chat_loop(
        model=MODEL,
        url=None,
        token=None,
        system="Be brief.",
        message=None,
        max_tokens=MAX_TOKENS,
        keep=10,
        out=out,
    )
    (dtype,) = dtypes
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    reply1 = reference(first, dtype)
    second = [
        *first,
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": "Name a colour."},
    ]
    reply2 = reference(second, dtype)
    # The blank line is skipped; turn two is built on turn one, reply included.
    assert seen == [first, second]
    # A prompt before each line, one after the last reply; EOF then ends the loop.
    assert out.getvalue() == f"> {reply1}\n> > {reply2}\n> "


@pytest.mark.slow
def test_keep_trims_history_to_whole_turns(smol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--keep 4`` must not leave a reply without its question at the head of the history
    (templates such as Mistral's refuse a conversation that starts with the assistant)."""
    from hwkit.plugins.runtimes.transformers import TransformersGenerator
    from hwkit.plugins.serving.chat import chat_loop

    seen: list[list[str]] = []
    real_prompt = TransformersGenerator.prompt

    def spy(self: TransformersGenerator, messages: list[dict[str, str]], n: int) -> Any:
        seen.append([f"{m['role']}:{m['content']}" for m in messages if m["role"] == "user"])
        assert messages[0]["role"] == "user", messages
        return real_prompt(self, messages, n)

    monkeypatch.setattr(TransformersGenerator, "prompt", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\ntwo\nthree\n"))
    chat_loop(
        model=MODEL,
        url=None,
        token=None,
        system=None,
        message=None,
        max_tokens=2,
        keep=4,
        out=io.StringIO(),
    )
    assert seen == [["user:one"], ["user:one", "user:two"], ["user:two", "user:three"]]


def test_keep_below_one_is_refused_before_loading() -> None:
    from hwkit.plugins.serving.chat import chat_loop

    with pytest.raises(UsageError, match="--keep"):
        chat_loop(
            model="/nonexistent/model",
            url=None,
            token=None,
            system=None,
            message="hi",
            max_tokens=2,
            keep=0,
            out=io.StringIO(),
        )


def test_missing_model_path_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    proc = run_hwkit("chat", "--model", str(missing), "--message", "hi", "--max-tokens", "2")
    assert proc.returncode == EXIT_NOT_FOUND, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(missing) in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.slow
def test_interactive_cli_answers_stdin_and_exits_0_on_eof(smol: Path, reference: Any) -> None:
    """The CLI end to end: one line on stdin, its reply, the next prompt, then EOF: exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "hwkit", "chat", "-m", MODEL, "--max-tokens", str(MAX_TOKENS)],
        input=f"{QUESTION}\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    want = reference([{"role": "user", "content": QUESTION}])
    assert proc.stdout == f"> {want}\n> "
    assert "Traceback" not in proc.stderr


def test_local_chat_loads_through_the_plan_on_the_process_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a mock RTX 5090 as the process's runtime, the local model is on its cuda:0 in
    the plan's bfloat16, not on the CPU backend."""
    from hwkit.plugins.runtimes.transformers import TransformersGenerator
    from hwkit.plugins.serving.chat import chat_loop
    from hwkit.runtime import set_current
    from hwkit.testing import mock_runtime

    runtime = mock_runtime("rtx5090")
    set_current(runtime)  # the conftest gives the next test a fresh runtime
    where: list[tuple[Any, str]] = []
    real_prompt = TransformersGenerator.prompt

    def spy(self: TransformersGenerator, messages: list[dict[str, str]], n: int) -> Any:
        where.append((self.device, self.plan.dtype))
        return real_prompt(self, messages, n)

    monkeypatch.setattr(TransformersGenerator, "prompt", spy)
    out = io.StringIO()
    chat_loop(
        model=MODEL, url=None, token=None, system=None, message="Hi", max_tokens=2, keep=4, out=out
    )
    assert where == [(runtime.device("cuda:0"), "bfloat16")]
    assert out.getvalue().strip()
