"""The Embedder contract: texts to L2-normalised float32 vectors on a device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

TextKind = Literal["query", "document"]


class Embedder(ABC):
    """Turns texts into vectors.

    ``embed`` returns an array of shape ``(len(texts), dim)``, dtype float32, each row of
    unit L2 norm, in input order (implementations may sort by length internally).
    """

    name: str  # registry name, e.g. "torch", "openvino"
    dim: int
    max_length: int

    @abstractmethod
    def embed(
        self, texts: Sequence[str], *, kind: TextKind = "document", batch_size: int | None = None
    ) -> np.ndarray: ...
