"""The ``embedder`` trainer: fine-tunes a sentence embedder on (query, positive) pairs with
in-batch negatives, through the core's job flow."""

from hwkit.plugins.trainers.embedder.trainer import EmbedderTrainConfig, EmbedderTrainer

__all__ = ["EmbedderTrainConfig", "EmbedderTrainer"]
