"""Cross-encoder reranking over the top ``top_n`` hits of a first-stage retriever.

Any local sequence-classification model directory works (one logit: that is the score;
two: the positive class's log-odds). Pairs longer than ``max_length`` tokens are
truncated from the document side first. No pretrained cross-encoder ships offline with
hwkit, so no reranking quality figure is claimed (docs/retrieval.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hwkit.errors import NotFoundError, UsageError
from hwkit.plugins.retrievers.documents import DocTable, Reject
from hwkit.plugins.retrievers.embedding import model_fingerprint
from hwkit.plugins.retrievers.store import Manifest, StoredRetriever
from hwkit.retriever import Document, Hit

FIRST_STAGE_DIR = "first_stage"


def first_stage_class(name: str) -> type[StoredRetriever]:
    from hwkit.plugins.retrievers import builtin_retrievers

    builtins = builtin_retrievers()
    if name in builtins:
        return builtins[name]
    from hwkit.plugin_manager import load_plugins

    return load_plugins().retrievers.get(name)


class RerankRetriever(StoredRetriever):
    """First stage (BM25 by default) then a cross-encoder scores (query, document) pairs."""

    name = "rerank"

    def __init__(
        self,
        model: str | Path,
        first_stage: StoredRetriever | None = None,
        *,
        top_n: int = 100,
        batch_size: int = 32,
        max_length: int = 512,
        device: Any = None,
    ) -> None:
        self.model_path = Path(model)
        if not (self.model_path / "config.json").is_file():
            raise NotFoundError(
                f"cross-encoder model directory not found: {self.model_path}",
                hint="pass a local sequence-classification model directory",
            )
        if top_n < 1:
            raise UsageError(f"top_n must be >= 1, got {top_n}")
        if first_stage is None:
            from hwkit.plugins.retrievers.bm25 import BM25Retriever

            first_stage = BM25Retriever()
        self.first_stage = first_stage
        self.top_n, self.batch_size, self.max_length = top_n, batch_size, max_length
        self._device = device
        self._model: Any = None
        self._tokenizer: Any = None

    conformance_unavailable = (
        "no cross-encoder model on this machine; set HWKIT_RERANK_MODEL to a local "
        "sequence-classification model directory"
    )

    @classmethod
    def conformance_instance(cls, device: Any) -> RerankRetriever | None:
        """For hwkit's conformance kit: a reranker over BM25 with ``$HWKIT_RERANK_MODEL``."""
        import os

        model = os.environ.get("HWKIT_RERANK_MODEL")
        return cls(model, device=device) if model else None

    # The documents are the first stage's.
    @property
    def docs(self) -> DocTable:  # type: ignore[override]  # read-only: the first stage's
        return self.first_stage.docs

    @property
    def rejects(self) -> list[Reject]:
        return self.first_stage.rejects

    @rejects.setter
    def rejects(self, value: list[Reject]) -> None:
        self.first_stage.rejects = value

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(self.model_path), local_files_only=True
        )
        model.eval()
        if self._device is not None and hasattr(self._device, "place"):
            model = self._device.place(model)
        self._model = model
        self._torch = torch

    def index(self, docs: Iterable[Document]) -> None:
        self.first_stage.index(docs)

    def add(self, docs: Iterable[Document]) -> None:
        self.first_stage.add(docs)

    def score_pairs(self, query: str, texts: list[str]) -> np.ndarray:
        """Cross-encoder scores of ``query`` against each text, in input order."""
        if self._model is None:
            self._load_model()
        torch = self._torch
        param = next(self._model.parameters())
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                enc = self._tokenizer(
                    [query] * len(chunk),
                    chunk,
                    padding=True,
                    truncation="longest_first",
                    max_length=min(self.max_length, self._tokenizer.model_max_length),
                    return_tensors="pt",
                )
                logits = self._model(
                    **{k: v.to(param.device) for k, v in enc.items()}
                ).logits.float()
                score = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
                out.append(score.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        first = self.first_stage.search(query, k=max(k, self.top_n))
        if not first:
            return []
        rows = {doc_id: i for i, doc_id in enumerate(self.docs.ids)}
        texts = [self.docs.content(rows[h.id]) for h in first]
        scores = self.score_pairs(query, texts)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(first[i].id, float(scores[i])) for i in order]

    def __len__(self) -> int:
        return len(self.first_stage)

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path),
            "model_fingerprint": model_fingerprint(self.model_path),
            "top_n": self.top_n,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "first_stage": self.first_stage.name,
            "first_stage_options": self.first_stage.options(),
        }

    def embedder_info(self) -> dict[str, Any] | None:
        return self.first_stage.embedder_info()

    def write_parts(self, directory: Path) -> None:
        self.first_stage.write_parts(directory)

    @classmethod
    def read_parts(
        cls, directory: Path, manifest: Manifest, docs: DocTable, **kwargs: Any
    ) -> RerankRetriever:
        opts = dict(manifest.options)
        stage_cls = first_stage_class(opts.pop("first_stage"))
        stage_manifest = Manifest(
            **{**manifest.__dict__, "options": opts.pop("first_stage_options")}
        )
        stage = stage_cls.read_parts(directory, stage_manifest, docs, **kwargs)
        stage.rejects = []
        opts.pop("model_fingerprint", None)
        return cls(opts.pop("model"), stage, **opts)
