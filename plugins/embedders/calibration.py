"""Calibration texts for full INT8 quantisation of the OpenVINO embedder.

Static INT8 quantisation fixes a range for every quantised activation from what the model
computes on sample inputs, so the samples should look like what will be embedded. The
best set is therefore the user's own corpus: ``hwkit index build`` passes a seeded sample
of the documents it indexes (:func:`sample`). Without one, a bundled set of varied English
text written for hwkit (science, news, code, chat, questions, how-to; one text per line
of ``calibration_texts.txt``) keeps the embedder usable on its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TypeVar

from hwkit.errors import UsageError
from hwkit.hashing import text_digest

T = TypeVar("T")

# NNCF's default subset_size: statistics from 300 samples are its documented sweet spot.
CALIBRATION_SIZE = 300
SEED = 0
DATA_FILE = "calibration_texts.txt"


@lru_cache(maxsize=1)
def _bundled() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def bundled_texts() -> list[str]:
    """The bundled calibration texts (a few hundred, a sentence to a paragraph each)."""
    return list(_bundled())


def sample(items: Sequence[T], size: int = CALIBRATION_SIZE, seed: int = SEED) -> list[T]:
    """Up to ``size`` items drawn without replacement with a fixed seed, in input order.

    The same corpus gives the same sample, so the quantised IR (whose cache key hashes
    the calibration texts) is reused when the same corpus is indexed again.
    """
    if size < 1:
        raise UsageError(f"calibration sample size must be >= 1, got {size}")
    if len(items) <= size:
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in picked]


def check_texts(texts: Sequence[str]) -> list[str]:
    """The non-blank texts, capped at :data:`CALIBRATION_SIZE` by a seeded sample.

    An empty set is an error: statistics from nothing would leave every range undefined.
    """
    if isinstance(texts, str):
        raise UsageError(
            "calibration_texts takes a list of texts, got a single string", hint="wrap it: [text]"
        )
    kept = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UsageError(f"calibration text {i} is {type(text).__name__}, not str")
        if text.strip():
            kept.append(text)
    if not kept:
        raise UsageError(
            "full INT8 quantisation needs calibration texts, got none (or only blank ones)",
            hint="pass a sample of the corpus you will embed, or calibration_texts=None for "
            "hwkit's bundled set",
        )
    return sample(kept)


def digest(texts: Sequence[str], max_length: int) -> str:
    """sha256 of the calibration inputs: the texts (prefixed as embedded) and the truncation."""
    payload = json.dumps({"max_length": max_length, "texts": list(texts)}, ensure_ascii=False)
    return text_digest(payload)
