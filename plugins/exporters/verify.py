"""Top-1 next-token agreement between the torch model and an exported artefact.

The same token ids (the HF tokenizer's, through the chat template) go to both runtimes; at
every position the argmax of the logits is compared. Tokenisation is checked on its own
(``tokenizer_agreement``) so a tokenizer mismatch is not hidden inside the logits figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


# Fixed conversations: short (CPU time), varied (code, facts, instructions, prose).
PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    (
        "Write a haiku about autumn leaves.",
        "Crimson leaves drift down,\nwhispering to the cold earth",
    ),
    ("Explain recursion in one sentence.", "Recursion is when a function calls itself"),
    ("List three primary colours.", "Red, blue and yellow are the three primary colours."),
)


def prompt_token_ids(
    tokenizer: Any, prompts: Sequence[tuple[str, str]] = PROMPTS
) -> list[list[int]]:
    """Each prompt as chat-template token ids: the user turn plus a partial answer."""
    seqs = []
    for user, answer in prompts:
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        seqs.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return seqs


def torch_argmax(model: Any, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Argmax of the torch model's logits at every position of every sequence."""

    import torch

    out = []
    with torch.inference_mode():
        for ids in seqs:
            logits = model(input_ids=torch.tensor([list(ids)])).logits[0]
            out.append(logits.float().argmax(-1).cpu().numpy())
    return out


def llama_cpp_argmax(gguf: Path, seqs: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Argmax of llama.cpp's logits (llama-cpp-python, all positions) for each sequence."""
    import numpy as np
    from llama_cpp import Llama

    n_ctx = max(len(s) for s in seqs) + 8
    llm = Llama(model_path=str(gguf), logits_all=True, n_ctx=n_ctx, n_threads=2, verbose=False)
    try:
        out = []
        for ids in seqs:
            llm.reset()
            llm.eval(list(ids))
            scores = np.asarray(llm.scores[: len(ids)])
            out.append(scores.argmax(-1))
        return out
    finally:
        llm.close()


def llama_cpp_tokens(gguf: Path, texts: Sequence[str]) -> list[list[int]]:
    """llama.cpp's own tokenisation of ``texts`` (special tokens parsed), vocab only."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]
    finally:
        llm.close()


def agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """Share of positions where both runtimes choose the same next token."""
    import numpy as np

    total = sum(len(r) for r in reference)
    matched = sum(
        int((np.asarray(r) == np.asarray(c)).sum())
        for r, c in zip(reference, candidate, strict=True)
    )
    return {
        "top1_agreement": matched / total if total else 0.0,
        "positions": total,
        "matched": matched,
    }


def tokenizer_agreement(
    tokenizer: Any, gguf: Path, prompts: Sequence[tuple[str, str]] = PROMPTS
) -> float:
    """Share of prompts that llama.cpp tokenises exactly as the HF tokenizer does."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": u}, {"role": "assistant", "content": a}], tokenize=False
        )
        for u, a in prompts
    ]
    hf = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    ours = llama_cpp_tokens(gguf, texts)
    return sum(a == b for a, b in zip(hf, ours, strict=True)) / len(texts)
