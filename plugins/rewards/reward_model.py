"""The ``reward_model`` reward: a local sequence-classification model scores each completion.

The model is a directory (``config.json``, safetensors weights, tokenizer) that
``AutoModelForSequenceClassification`` loads, or a hwkit run directory holding one in
``model/``. It is read from disk only: ``use_safetensors=True`` (no pickled weights) and
``local_files_only=True`` (never a hub). Prompt and completion go in as a text pair
(``pair = false``: the completion alone). The reward is the logit of a single-logit head,
or of class ``label``, passed through ``normalize``: ``sigmoid`` (default), ``softmax``
(the probability of ``label``) or ``none`` (the raw logit). Batches run ``batch_size``
texts at a time on ``device`` (default ``cpu``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from hwkit.errors import ConfigError, NotFoundError
from hwkit.reward import Reward, RewardOptions, check_lengths


class RewardModelOptions(RewardOptions):
    path: str = Field(description="local directory of a sequence-classification model")
    label: int | None = Field(None, ge=0, description="the class whose logit is the reward")
    normalize: Literal["sigmoid", "softmax", "none"] = "sigmoid"
    pair: bool = Field(True, description="tokenise (prompt, completion) as a text pair")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=8)
    device: str = Field("cpu", description="torch device to run on")


def model_dir(given: str) -> Path:
    """The model directory for ``given``: itself, or a run directory's ``model/``."""
    path = Path(given).expanduser()
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not path.exists():
        raise NotFoundError(f"reward 'reward_model': {path} does not exist")
    raise NotFoundError(
        f"reward 'reward_model': {path} holds no config.json (nor model/config.json)",
        hint="give the directory of a saved AutoModelForSequenceClassification",
    )


class RewardModelReward(Reward):
    """The score of a local sequence-classification (reward) model."""

    name = "reward_model"
    description = "a local sequence-classification model's logit (sigmoid by default)"
    options_model = RewardModelOptions
    options: RewardModelOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.path = model_dir(self.options.path)
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        """Read the tokenizer and the weights (first use)."""
        if self.model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, use_safetensors=True, local_files_only=True
            )
        except OSError as exc:
            raise NotFoundError(
                f"reward 'reward_model': no safetensors weights in {self.path} ({exc})",
                hint="save the model with safe_serialization=True",
            ) from None
        num_labels = int(model.config.num_labels)
        label = self.options.label
        if label is None and num_labels != 1:
            raise ConfigError(
                f"reward 'reward_model': {self.path} has {num_labels} labels",
                hint="set option label to the index of the class whose logit is the reward",
            )
        if label is not None and label >= num_labels:
            raise ConfigError(
                f"reward 'reward_model': label {label} is out of range for {num_labels} labels"
            )
        if self.options.normalize == "softmax" and num_labels == 1:
            raise ConfigError(
                "reward 'reward_model': softmax needs a head with several labels",
                hint='use normalize = "sigmoid" for a single-logit head',
            )
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        model.eval()
        self.model = model.to(self.options.device)
        self.tokenizer = tokenizer

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return self.score_batch([prompt], [completion], [row])[0]

    def score_batch(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        check_lengths(prompts, completions, rows)
        self.load()
        import torch

        opts = self.options
        label = opts.label or 0
        out: list[float] = []
        for start in range(0, len(completions), opts.batch_size):
            texts = list(completions[start : start + opts.batch_size])
            pairs = list(prompts[start : start + opts.batch_size]) if opts.pair else None
            encoded = self.tokenizer(
                *((pairs, texts) if pairs is not None else (texts,)),
                padding=True,
                truncation=True,
                max_length=opts.max_length,
                return_tensors="pt",
            ).to(self.options.device)
            with torch.inference_mode():
                logits = self.model(**encoded).logits.float()
            if opts.normalize == "softmax":
                values = torch.softmax(logits, dim=-1)[:, label]
            else:
                values = logits[:, label]
                if opts.normalize == "sigmoid":
                    values = torch.sigmoid(values)
            out.extend(float(v) for v in values.cpu())
        return out

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
