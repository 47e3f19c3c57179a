"""A transformer plus pooling and L2 normalisation as one torch module.

The torch embedder runs it, the OpenVINO embedder converts it (so pooling and
normalisation run inside the compiled graph), and the embedder trainer fine-tunes it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hwkit.plugins.embedders.model_config import Pooling


def pool(
    token_embeddings: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling
) -> torch.Tensor:
    """Pool ``(batch, seq, dim)`` token vectors to ``(batch, dim)`` as sentence-transformers."""
    if mode == "cls":
        return token_embeddings[:, 0]
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    if mode == "max":
        masked = token_embeddings.masked_fill(mask == 0, torch.finfo(token_embeddings.dtype).min)
        return masked.max(dim=1).values
    if mode == "lasttoken":  # right padding: the last real token sits at length - 1
        last = (attention_mask.sum(dim=1) - 1).clamp(min=0)
        return token_embeddings[torch.arange(token_embeddings.shape[0]), last]
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    if mode == "mean_sqrt_len":
        return summed / counts.sqrt()
    return summed / counts


class PooledEncoder(torch.nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids]) -> (batch, dim)`` sentence vectors."""

    def __init__(self, model: torch.nn.Module, pooling: Pooling, *, normalize: bool = True) -> None:
        super().__init__()
        self.model: Any = model  # a transformers model: .config, gradient_checkpointing_enable
        self.pooling: Pooling = pooling
        self.normalize = normalize

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs)
        hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
        vectors = pool(hidden, attention_mask, self.pooling)
        if self.normalize:
            vectors = F.normalize(vectors.float(), p=2.0, dim=1)
        return vectors


def load_encoder(path: Any, pooling: Pooling, *, dtype: str | None = None) -> PooledEncoder:
    """Load ``AutoModel`` weights (safetensors only) from a local directory and wrap it."""
    from transformers import AutoModel

    kwargs: dict[str, Any] = {"use_safetensors": True, "local_files_only": True}
    if dtype not in (None, "float32"):
        kwargs["dtype"] = getattr(torch, str(dtype))
    model = AutoModel.from_pretrained(str(path), **kwargs)
    model.eval()
    return PooledEncoder(model, pooling)
