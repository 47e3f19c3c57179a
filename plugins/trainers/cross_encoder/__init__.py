"""The ``cross-encoder`` trainer: a reranker (one relevance logit per (query, document)) for
:class:`~hwkit.plugins.retrievers.rerank.RerankRetriever`, trained on BEIR qrels with BM25
hard negatives, through the core's job flow.

Modules: ``config`` (the TOML config), ``data`` (BEIR datasets to groups, skipped
queries, the run's ``train.jsonl``), ``mining`` (BM25 hard negatives and held-out
candidates), ``loss`` (BCE, the default, or listwise), ``scoring`` and ``step`` (pairs
through the model, one step's forward and backward), ``loop`` (optimizer, schedule,
memory guard, out-of-memory retries), ``evaluation`` (nDCG@10 of BM25 -> rerank, probe
loss), ``checkpoints`` (the core's scheme), ``export`` (the sequence-classification
directory) and ``trainer`` (the phases).
"""

from hwkit.plugins.trainers.cross_encoder.config import BeirSource, CrossEncoderTrainConfig
from hwkit.plugins.trainers.cross_encoder.trainer import CrossEncoderTrainer

__all__ = ["BeirSource", "CrossEncoderTrainConfig", "CrossEncoderTrainer"]
