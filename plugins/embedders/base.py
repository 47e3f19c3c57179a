"""What the built-in embedders share: a local model directory with its tokenizer, prompts
and length limit, and the device and plan the core handed over.

An embedder never chooses its device: ``hwkit.jobs.load_embedder`` plans an ``embed`` job
and constructs the class with ``model=``, ``device=`` and ``plan=``. A direct construction
must pass a device too (the conformance kit passes its mock device); without a plan the
embedder runs in float32 at the ``batch_size`` it was given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.embedder import Embedder, TextKind
from hwkit.errors import UsageError
from hwkit.plugins.embedders.model_config import EmbedderModelConfig, read_model_config

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan

KINDS = ("query", "document")


def require_device(device: object, who: str) -> Device:
    """``device`` when it is a hwkit Device; anything else (None, an id string) is refused:
    choosing a device is the core's job."""
    from hwkit.device import Device

    if isinstance(device, Device):
        return device
    raise UsageError(
        f"{who} needs a hwkit Device, got {device!r}",
        hint="build it with hwkit.jobs.load_embedder(name, model, device='cuda:0'), "
        "which plans the device and dtype",
    )


def effective_max_length(
    config: EmbedderModelConfig, tokenizer: Any, model_config: Any, requested: int | None
) -> int:
    """The smallest of what was asked, what the model was trained with, and what it can hold."""
    if requested is not None and requested < 2:
        raise UsageError(f"max_length must be at least 2 tokens, got {requested}")
    limits = [requested, config.max_seq_length]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int):
        limits.append(positions)
    return int(min((x for x in limits if x), default=512))


class ModelEmbedder(Embedder):
    """An embedder over a local transformers / sentence-transformers model directory."""

    model_path: Path
    config: EmbedderModelConfig
    plan: Plan | None
    batch_size: int
    tokenizer: Any
    hf_config: Any
    query_prefix: str
    document_prefix: str
    show_progress: bool | None

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: Device | None = None,
        plan: Plan | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        query_prefix: str | None = None,
        document_prefix: str | None = None,
        show_progress: bool | None = None,
    ) -> None:
        """``model``: a known name, a model directory or a hub id in the local cache (None:
        ``default_model``). ``batch_size`` is the plan's micro-batch when a plan is given."""
        from transformers import AutoConfig, AutoTokenizer

        from hwkit.models import resolve

        self.device = require_device(device, type(self).__name__)
        self.plan = plan
        self.batch_size = plan.micro_batch if plan is not None else batch_size
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {self.batch_size}")
        self.model_path = resolve(model, default=self.default_model).weights_dir
        self.config = read_model_config(self.model_path)
        self.show_progress = show_progress
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        self.hf_config = AutoConfig.from_pretrained(str(self.model_path), local_files_only=True)
        self.max_length = effective_max_length(
            self.config, self.tokenizer, self.hf_config, max_length
        )
        self.dim = int(self.hf_config.hidden_size)
        self.query_prefix = self.config.prefix("query") if query_prefix is None else query_prefix
        self.document_prefix = (
            self.config.prefix("document") if document_prefix is None else document_prefix
        )
        self._load()

    def _load(self) -> None:
        """Load what the subclass runs (its encoder), once the common set-up is done."""

    @property
    def dtype(self) -> str:
        """The dtype the plan chose (float32 without a plan)."""
        return self.plan.dtype if self.plan is not None else "float32"

    def _prepare(self, texts: Sequence[str], kind: TextKind) -> list[str]:
        """Texts as the model sees them: prompt prefixed, lower-cased where the model asks."""
        if kind not in KINDS:
            raise UsageError(f"kind must be one of {KINDS}, got {kind!r}")
        if isinstance(texts, str):
            raise UsageError(
                "embed() takes a list of texts, got a single string", hint="wrap it: [text]"
            )
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageError(f"text {i} is {type(text).__name__}, not str")
            text = prefix + text
            out.append(text.lower() if self.config.do_lower_case else text)
        return out
