"""Top-1 next-token agreement between the torch model and an exported artefact.

The same token ids (the HF tokenizer's, through the chat template) go to both runtimes; at
every position the argmax of the logits is compared. Tokenisation is checked on its own
(``tokenizer_agreement``) so a tokenizer mismatch is not hidden inside the logits figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.plugins.exporters.errors import VerificationError

if TYPE_CHECKING:
    import numpy as np


# Fixed conversations: varied (facts, prose, code, JSON scoring, personal answers, lists,
# arithmetic, translation) and short enough for CPU time. About 460 positions for SmolLM2,
# so one flipped near-tie moves the agreement by 0.2 points, not 0.8.
PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "The capital of France is Paris."),
    (
        "Write a haiku about autumn leaves.",
        "Crimson leaves drift down,\nwhispering to the cold earth",
    ),
    ("Explain recursion in one sentence.", "Recursion is when a function calls itself"),
    ("List three primary colours.", "Red, blue and yellow are the three primary colours."),
    (
        "Write a Python function that returns the factorial of n.",
        "def factorial(n):\n    if n <= 1:\n        return 1\n    return n * factorial(n - 1)",
    ),
    (
        "Score this profile from 1 to 10 and return JSON: "
        "'Data engineer, writes about Rust and databases.'",
        '{"score": 7, "reason": "Clear technical focus on Rust and databases."}',
    ),
    (
        "How do I make a cup of tea?",
        "Boil fresh water, put a tea bag in a cup, pour the water over it and let it steep for "
        "three to five minutes. Remove the bag and add milk or sugar if you like.",
    ),
    (
        "What did you learn from your first job?",
        "My first job taught me that showing up on time and asking questions early saves "
        "everyone a lot of trouble later.",
    ),
    (
        "Summarise the water cycle.",
        "Water evaporates from oceans and lakes, condenses into clouds, falls as rain or snow, "
        "and flows back into rivers and seas.",
    ),
    ("What is 12 times 7?", "12 times 7 is 84."),
    (
        "Translate 'good morning' into Spanish and French.",
        "In Spanish it is 'buenos días' and in French it is 'bonjour'.",
    ),
    (
        "Give me two tips for writing clear emails.",
        "1. Put the request in the first sentence.\n2. Keep each paragraph to one idea.",
    ),
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


# Positions where the torch model's top-1 logit leads the runner-up by at least this much are
# "decisive": a correct export must agree there. Below it, a near-tie can flip on rounding.
DECISIVE_MARGIN = 0.5


@dataclass
class Reference:
    """The torch model's choices: argmax and top-1 minus top-2 logit at every position."""

    seqs: list[list[int]]
    argmax: list[np.ndarray]
    margin: list[np.ndarray]


def torch_reference(model: Any, seqs: Sequence[Sequence[int]]) -> Reference:
    """Score every position of every sequence with the torch model."""
    import torch

    argmax, margin = [], []
    with torch.inference_mode():
        for ids in seqs:
            logits = model(input_ids=torch.tensor([list(ids)])).logits[0].float()
            top = logits.topk(2, dim=-1).values
            argmax.append(logits.argmax(-1).cpu().numpy())
            margin.append((top[:, 0] - top[:, 1]).cpu().numpy())
    return Reference([list(s) for s in seqs], argmax, margin)


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


def agreement(reference: Reference, candidate: Sequence[np.ndarray]) -> dict[str, Any]:
    """Share of positions where both runtimes choose the same next token.

    A position whose context (the ids up to it) was already scored is counted once: the
    prompts share the chat template's system preamble, which would otherwise weigh 4x.
    """
    seen: set[tuple[int, ...]] = set()
    total = matched = decisive = decisive_matched = 0
    for seq, ref, margin, cand in zip(
        reference.seqs, reference.argmax, reference.margin, candidate, strict=True
    ):
        for i in range(len(seq)):
            key = tuple(seq[: i + 1])
            if key in seen:
                continue
            seen.add(key)
            same = int(ref[i] == cand[i])
            total += 1
            matched += same
            if margin[i] >= DECISIVE_MARGIN:
                decisive += 1
                decisive_matched += same
    return {
        "top1_agreement": matched / total if total else 0.0,
        "positions": total,
        "matched": matched,
        "decisive_agreement": decisive_matched / decisive if decisive else 0.0,
        "decisive_positions": decisive,
        "decisive_margin": DECISIVE_MARGIN,
    }


def require_agreement(
    figures: dict[str, Any], label: str, threshold: float, decisive: float, hint: str
) -> None:
    """Record the gates in ``figures`` and refuse an artefact below either of them."""
    figures["threshold"] = threshold
    figures["decisive_threshold"] = decisive
    if figures["top1_agreement"] < threshold or figures["decisive_agreement"] < decisive:
        raise VerificationError(
            f"{label}: top-1 agreement with the torch model {figures['top1_agreement']:.3f} "
            f"(decisive positions {figures['decisive_agreement']:.3f}) is below {threshold} "
            f"({decisive})",
            hint=hint,
        )


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
