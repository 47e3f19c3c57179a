"""Cross-encoder reranking over the top ``top_n`` hits of a first-stage retriever.

Any local sequence-classification model directory works (one logit: that is the score;
two: the positive class's log-odds). Pairs longer than ``max_length`` tokens are
truncated from the document side first. The cross-encoder is loaded through a ``rerank``
plan (``hwkit.jobs.place``): on the planned device, in the planned dtype, scored in the
planned micro-batches. No pretrained cross-encoder ships offline with hwkit: ``hwkit train
cross-encoder`` makes one (its run directory is accepted as the model); what a short run
measures is in docs/retrieval.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hwkit.errors import NotFoundError, UsageError
from hwkit.hashing import model_digest
from hwkit.plugins.retrievers.documents import DocTable
from hwkit.plugins.retrievers.store import Manifest, StoredRetriever
from hwkit.rejects import Reject
from hwkit.retriever import Document, Hit

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.runtime import Runtime

RERANK_MODEL_ENV = "HWKIT_RERANK_MODEL"
RUN_MODEL = "model"  # where a cross-encoder trainer's run directory keeps the model


def cross_encoder_dir(model: str | Path) -> Path:
    """``model``, or ``model/model`` when ``model`` is a ``hwkit train cross-encoder`` run
    directory (it has no config.json of its own, its ``model/`` has)."""
    path = Path(model).expanduser()
    if not (path / "config.json").is_file() and (path / RUN_MODEL / "config.json").is_file():
        return path / RUN_MODEL
    return path


def first_stage_class(name: str, runtime: Runtime | None = None) -> type[StoredRetriever]:
    """The first-stage retriever class registered as ``name`` in the runtime's registry."""
    from hwkit.runtime import current

    cls = (runtime or current()).plugins.retrievers.get(name)
    if not issubclass(cls, StoredRetriever):
        raise UsageError(
            f"the rerank retriever's first stage must be an hwkit index retriever; {name!r} is not",
            hint="use bm25, dense or hybrid as the first stage",
        )
    return cls


class RerankRetriever(StoredRetriever):
    """First stage (BM25 by default) then a cross-encoder scores (query, document) pairs.

    ``model``: a sequence-classification directory, or a ``hwkit train cross-encoder`` run
    directory (its ``model/``). ``device``: a device the caller was handed (the conformance
    kit's mock device); the model then runs there in float32. Without one the model goes
    where its ``rerank`` plan on ``runtime`` (default: the process's) puts it.
    """

    name = "rerank"
    supports_add = True  # adds to the first stage, which refuses when it cannot

    def __init__(
        self,
        model: str | Path,
        first_stage: StoredRetriever | None = None,
        *,
        top_n: int = 100,
        batch_size: int = 32,
        max_length: int = 512,
        device: Device | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.model_path = cross_encoder_dir(model)
        if not (self.model_path / "config.json").is_file():
            raise NotFoundError(
                f"cross-encoder model directory not found: {self.model_path}",
                hint="pass a local sequence-classification model directory or a "
                "`hwkit train cross-encoder` run directory",
            )
        if top_n < 1:
            raise UsageError(f"top_n must be >= 1, got {top_n}")
        if first_stage is None:
            from hwkit.plugins.retrievers.bm25 import BM25Retriever

            first_stage = BM25Retriever()
        self.first_stage = first_stage
        self.top_n, self.batch_size, self.max_length = top_n, batch_size, max_length
        self.runtime = runtime
        self.device: Device | None = device
        self.plan: Plan | None = None
        self._model: Any = None
        self._tokenizer: Any = None

    conformance_unavailable = (
        "no cross-encoder model on this machine; set HWKIT_RERANK_MODEL to a local "
        "sequence-classification model directory or a `hwkit train cross-encoder` run"
    )

    @classmethod
    def conformance_instance(cls, device: Device) -> RerankRetriever | None:
        """For hwkit's conformance kit: a reranker over BM25 with ``$HWKIT_RERANK_MODEL`` (a
        model directory or a cross-encoder run directory)."""
        model = os.environ.get(RERANK_MODEL_ENV)
        return cls(model, device=device) if model else None

    # The documents are the first stage's.
    @property
    def docs(self) -> DocTable:
        return self.first_stage.docs

    @docs.setter
    def docs(self, value: DocTable) -> None:
        self.first_stage.docs = value

    @property
    def rejects(self) -> list[Reject]:
        return self.first_stage.rejects

    @rejects.setter
    def rejects(self, value: list[Reject]) -> None:
        self.first_stage.rejects = value

    def _seq_len(self, positions: int) -> int:
        return min(self.max_length, positions)

    def _load_model(self) -> None:
        """Tokenizer and model, the model in the plan's dtype on the plan's device."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        dtype = "float32"
        if self.device is None:
            self.plan = self._place()
            dtype = self.plan.dtype
        assert self.device is not None  # handed in, or set by _place
        model = AutoModelForSequenceClassification.from_pretrained(
            str(self.model_path),
            local_files_only=True,
            use_safetensors=True,
            dtype=getattr(torch, dtype),
        )
        model.eval()
        self._model = self.device.place(model)
        self._torch = torch

    def _place(self) -> Plan:
        """Plan a ``rerank`` job for the cross-encoder and take its device."""
        from hwkit import jobs
        from hwkit.allocator import Job, ModelSpec

        spec = ModelSpec.from_pretrained(self.model_path)
        job = Job(
            "rerank",
            spec,
            seq_len=self._seq_len(spec.max_positions),
            effective_batch=self.batch_size,
            runtimes=("transformers",),
        )
        placement = jobs.place(job, self.runtime)
        self.device = placement.device
        return placement.plan

    def index(self, docs: Iterable[Document]) -> None:
        self.first_stage.index(docs)

    def add(self, docs: Iterable[Document]) -> None:
        self.first_stage.add(docs)

    def score_pairs(self, query: str, texts: list[str]) -> np.ndarray:
        """Cross-encoder scores of ``query`` against each text, in input order."""
        if self._model is None:
            self._load_model()
        torch = self._torch
        assert self.device is not None
        target = self.device.torch_device()
        batch = self.plan.micro_batch if self.plan is not None else self.batch_size
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch):
                chunk = texts[start : start + batch]
                enc = self._tokenizer(
                    [query] * len(chunk),
                    chunk,
                    padding=True,
                    truncation="longest_first",
                    max_length=self._seq_len(self._tokenizer.model_max_length),
                    return_tensors="pt",
                )
                logits = self._model(**{k: v.to(target) for k, v in enc.items()}).logits.float()
                score = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
                out.append(score.cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        first = self.first_stage.search(query, k=max(k, self.top_n))
        if not first:
            return []
        texts = [self.docs.content(self.docs.row(h.id)) for h in first]
        scores = self.score_pairs(query, texts)
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(first[i].id, float(scores[i])) for i in order]

    def __len__(self) -> int:
        return len(self.first_stage)

    # -- persistence ---------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path),
            "model_fingerprint": model_digest(self.model_path),
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
        runtime: Runtime | None = kwargs.get("runtime")
        stage_cls = first_stage_class(opts.pop("first_stage"), runtime)
        stage_manifest = Manifest(
            **{**manifest.__dict__, "options": opts.pop("first_stage_options")}
        )
        stage = stage_cls.read_parts(directory, stage_manifest, docs, **kwargs)
        stage.rejects = []
        opts.pop("model_fingerprint", None)
        return cls(opts.pop("model"), stage, runtime=runtime, **opts)
