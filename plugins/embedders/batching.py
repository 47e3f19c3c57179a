"""Tokenise once, sort by token length, pad per batch: what both embedders share.

Sorting by length makes each batch pad to its own longest text instead of the corpus'
longest, which is most of the speed of embedding a corpus of mixed lengths.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwkit.log import get_logger

log = get_logger(__name__)

PROGRESS_THRESHOLD = 1000  # texts; a progress bar above this many


@dataclass
class Encoded:
    """Token ids per text (truncated to ``max_length``) and how many texts were cut."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    truncated: int

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self))

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> Encoded:
    """Tokenise ``texts`` without padding; texts over ``max_length`` tokens are truncated.

    A fast tokenizer reports the overflow in the same pass (``overflow_to_sample_mapping``),
    so counting truncated texts costs nothing extra.
    """
    texts = list(texts)
    if not texts:
        return Encoded([], None, 0)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=True,
            return_attention_mask=False,
        )
        mapping = enc["overflow_to_sample_mapping"]
        first: dict[int, int] = {}
        for row, sample in enumerate(mapping):
            first.setdefault(int(sample), row)
        rows = [first[i] for i in range(len(texts))]
        truncated = sum(1 for n in Counter(int(s) for s in mapping).values() if n > 1)
        ids = [enc["input_ids"][r] for r in rows]
        types = [enc["token_type_ids"][r] for r in rows] if "token_type_ids" in enc else None
        return Encoded(ids, types, truncated)
    full = tokenizer(texts, truncation=False, return_attention_mask=False, verbose=False)
    truncated = sum(1 for ids in full["input_ids"] if len(ids) > max_length)
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False)
    types = list(enc["token_type_ids"]) if "token_type_ids" in enc else None
    return Encoded(list(enc["input_ids"]), types, truncated)


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Index batches, longest texts first (an out-of-memory error shows up at once)."""
    if batch_size < 1:
        from hwkit.errors import UsageError

        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(
    tokenizer: Any,
    enc: Encoded,
    index: np.ndarray,
    *,
    pad_length: int | None = None,
    pad_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """int64 arrays for rows ``index``, padded to the batch's longest (or ``pad_length``).

    ``pad_rows`` appends all-padding rows up to a fixed batch (static shapes for the NPU);
    their attention mask is zero, so pooling ignores them and the caller drops them.
    """
    features: dict[str, list[list[int]]] = {"input_ids": [enc.input_ids[i] for i in index]}
    if enc.token_type_ids is not None:
        features["token_type_ids"] = [enc.token_type_ids[i] for i in index]
    padded = tokenizer.pad(
        features,
        padding="max_length" if pad_length else "longest",
        max_length=pad_length,
        return_attention_mask=True,
        return_tensors="np",
    )
    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in padded.items()}
    if pad_rows and pad_rows > len(index):
        extra = pad_rows - len(index)
        for key, value in arrays.items():
            fill = tokenizer.pad_token_id if key == "input_ids" else 0
            filler = np.full((extra, value.shape[1]), fill or 0, dtype=np.int64)
            arrays[key] = np.concatenate([value, filler], axis=0)
    return arrays


def report_truncation(enc: Encoded, max_length: int, model: str) -> None:
    """Log once per call how many texts were cut to ``max_length`` tokens (never an error)."""
    if enc.truncated:
        log.warning(
            "texts truncated",
            count=enc.truncated,
            of=len(enc),
            max_length=max_length,
            model=model,
        )


def progress(total: int, *, enabled: bool | None, description: str) -> Any:
    """A rich progress bar over ``total`` texts, or a no-op for small inputs."""
    show = total > PROGRESS_THRESHOLD if enabled is None else enabled
    if not show:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    return _RichProgress(bar, total, description)


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def advance(self, n: int) -> None:
        return None


class _RichProgress:
    def __init__(self, bar: Any, total: int, description: str) -> None:
        self.bar, self.total, self.description = bar, total, description
        self.task: Any = None

    def __enter__(self) -> _RichProgress:
        self.bar.__enter__()
        self.task = self.bar.add_task(self.description, total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
