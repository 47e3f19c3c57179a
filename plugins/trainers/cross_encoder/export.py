"""The trained cross-encoder as a Hugging Face sequence-classification directory
(``config.json`` with one label, ``model.safetensors``, the tokenizer): the artefact
:class:`RerankRetriever` and sentence-transformers' ``CrossEncoder`` load.

The tokenizer is saved with ``model_max_length`` set to the length trained at, so a
reranker truncates pairs where training did. The directory is assembled beside the target
and swapped into place (:func:`hwkit.atomic.staged_dir`): a reader sees the old model or
the whole new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwkit.atomic import staged_dir
from hwkit.log import get_logger

log = get_logger("hwkit.train.cross_encoder")


def save_cross_encoder(model: Any, tokenizer: Any, target: Path, *, max_len: int) -> Path:
    """Write ``model`` (float32 weights, safetensors) and ``tokenizer`` to ``target``."""
    import torch

    model.config.id2label = {0: "relevance"}
    model.config.label2id = {"relevance": 0}
    tokenizer.model_max_length = max_len
    with staged_dir(target) as tmp:
        dtype = next(model.parameters()).dtype
        if dtype != torch.float32:
            model = model.float()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    log.info("cross_encoder.saved", path=str(target))
    return target
