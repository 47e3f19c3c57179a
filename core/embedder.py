"""The Embedder contract: texts to L2-normalised float32 vectors on a planned device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    import numpy as np

    from hwkit.device import Device

TextKind = Literal["query", "document"]


class Embedder(ABC):
    """Turns texts into vectors.

    ``embed`` returns an array of shape ``(len(texts), dim)``, dtype float32, each row of
    unit L2 norm, in input order (implementations may sort by length internally).

    Embedders are built by the core (``hwkit.jobs.load_embedder``): it resolves the model
    (``default_model`` when none is named), plans an ``embed`` job on a device that runs
    ``runtime`` and constructs the class with ``model=``, ``device=`` and ``plan=``. An
    embedder never chooses its device.
    """

    name: ClassVar[str]  # registry name, e.g. "torch", "openvino"
    runtime: ClassVar[str] = "transformers"  # what the device must run (Capabilities.runtimes)
    default_model: ClassVar[str] = "all-minilm-l6-v2"
    dim: int
    max_length: int
    device: Device

    @abstractmethod
    def embed(
        self, texts: Sequence[str], *, kind: TextKind = "document", batch_size: int | None = None
    ) -> np.ndarray: ...
