"""The ``embedder`` trainer: fine-tunes a sentence embedder on (query, positive) pairs with
in-batch negatives, through the core's job flow.

Modules: ``config`` (the TOML config), ``pairs`` (reading pairs, rejects), ``loss``
(InfoNCE with false negatives masked), ``encoding`` and ``step`` (one gradient-cached
step), ``loop`` (optimizer, schedule, memory guard, out-of-memory retries),
``evaluation`` (held-out loss), ``checkpoints`` (the core's scheme), ``export`` (the
sentence-transformers directory) and ``trainer`` (the phases).
"""

from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig
from hwkit.plugins.trainers.embedder.trainer import EmbedderTrainer

__all__ = ["EmbedderTrainConfig", "EmbedderTrainer"]
