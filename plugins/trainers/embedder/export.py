"""The fine-tuned embedder as a sentence-transformers directory (safetensors), the artefact
``TorchEmbedder``, ``OpenVINOEmbedder`` and ``SentenceTransformer`` load.

It is assembled in a temporary folder beside the target and swapped into place
(:func:`hwkit.atomic.staged_dir`), so a reader sees the old model or the whole new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.atomic import staged_dir, write_json_atomic
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.plugins.trainers.embedder.config import EmbedderTrainConfig

log = get_logger("hwkit.train.embedder")

MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {
        "idx": 2,
        "name": "2",
        "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize",
    },
]


def save_sentence_transformer(
    encoder: Any, tokenizer: Any, source: Path, target: Path, config: EmbedderTrainConfig
) -> Path:
    """Write ``encoder`` (pooling and prompts as ``source`` has them, the config's prefixes
    over them) as a sentence-transformers directory at ``target``."""
    from hwkit.plugins.embedders.model_config import read_model_config

    source_cfg = read_model_config(source)
    with staged_dir(target) as tmp:
        encoder.model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(tmp / "modules.json", MODULES)
        pooling = source_cfg.pooling
        write_json_atomic(
            tmp / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": int(encoder.model.config.hidden_size),
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": pooling == "max",
                "pooling_mode_mean_sqrt_len_tokens": pooling == "mean_sqrt_len",
                "pooling_mode_lasttoken": pooling == "lasttoken",
            },
        )
        (tmp / "2_Normalize").mkdir(exist_ok=True)
        write_json_atomic(
            tmp / "sentence_bert_config.json",
            {"max_seq_length": config.max_seq_len, "do_lower_case": source_cfg.do_lower_case},
        )
        prompts = dict(source_cfg.prompts)
        if config.query_prefix is not None:
            prompts["query"] = config.query_prefix
        if config.document_prefix is not None:
            prompts["document"] = config.document_prefix
        write_json_atomic(
            tmp / "config_sentence_transformers.json",
            {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
        )
    log.info("embedder.saved", path=str(target))
    return target
