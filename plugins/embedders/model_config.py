"""How an embedding model wants to be run, read from its sentence-transformers files.

A sentence-transformers directory says how to pool (``1_Pooling/config.json``), how long
inputs may be (``sentence_bert_config.json``), whether to normalise (``modules.json``) and
which prompts to prepend (``config_sentence_transformers.json``). A plain transformers
directory has none of these: then bge models get CLS pooling and their query
instruction, everything else mean pooling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hwkit.errors import ConfigError
from hwkit.log import get_logger

log = get_logger(__name__)

Pooling = Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"]

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class EmbedderModelConfig:
    """What the model directory says about pooling, length, normalisation and prompts."""

    path: Path
    pooling: Pooling = "mean"
    normalize: bool = True  # what modules.json says; hwkit always returns unit rows
    max_seq_length: int | None = None
    do_lower_case: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    dim: int | None = None

    @property
    def is_sentence_transformers(self) -> bool:
        return (self.path / "modules.json").is_file()

    def prefix(self, kind: str) -> str:
        """The prompt a text of ``kind`` ("query" or "document") gets, "" when none."""
        aliases = {"query": ("query",), "document": ("document", "passage", "corpus")}
        for key in aliases.get(kind, (kind,)):
            if key in self.prompts:
                return self.prompts[key]
        return ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg})", hint="fix or remove the file"
        ) from exc


def _pooling_from_st(config: dict[str, Any], path: Path) -> Pooling:
    if "pooling_mode" in config:  # newer sentence-transformers spell it as one string
        mode = str(config["pooling_mode"])
        names: dict[str, Pooling] = {
            "mean": "mean",
            "cls": "cls",
            "max": "max",
            "mean_sqrt_len_tokens": "mean_sqrt_len",
            "lasttoken": "lasttoken",
        }
        if mode in names:
            return names[mode]
        raise ConfigError(
            f"{path}: pooling_mode {mode!r} is not supported", hint=f"use {list(names)}"
        )
    flags: list[tuple[str, Pooling]] = [
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_max_tokens", "max"),
        ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
        ("pooling_mode_lasttoken", "lasttoken"),
    ]
    chosen = [mode for key, mode in flags if config.get(key)]
    if len(chosen) != 1:
        raise ConfigError(
            f"{path}: exactly one pooling mode must be true, found {chosen or 'none'}",
            hint="hwkit pools with one mode (concatenated poolings are not supported)",
        )
    return chosen[0]


def read_model_config(path: Path) -> EmbedderModelConfig:
    """Read pooling, max length, normalisation and prompts from a model directory."""
    pooling: Pooling | None = None
    normalize = True
    dim: int | None = None
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        types = [str(m.get("type", "")) for m in modules]
        normalize = any(t.endswith(".Normalize") for t in types)
        for module in modules:
            if str(module.get("type", "")).endswith(".Pooling"):
                pool_file = path / module.get("path", "") / "config.json"
                if pool_file.is_file():
                    pool_cfg = _read_json(pool_file)
                    pooling = _pooling_from_st(pool_cfg, pool_file)
                    dim = pool_cfg.get("word_embedding_dimension")
    max_seq_length: int | None = None
    do_lower_case = False
    st_file = path / "sentence_bert_config.json"
    if st_file.is_file():
        st_cfg = _read_json(st_file)
        max_seq_length = st_cfg.get("max_seq_length")
        do_lower_case = bool(st_cfg.get("do_lower_case", False))
    prompts: dict[str, str] = {}
    prompts_file = path / "config_sentence_transformers.json"
    if prompts_file.is_file():
        prompts = {
            str(k): str(v) for k, v in (_read_json(prompts_file).get("prompts") or {}).items()
        }
    is_bge = "bge" in path.name.lower() or "bge" in str(_model_type_hint(path)).lower()
    if pooling is None:
        pooling = "cls" if is_bge else "mean"
    if not prompts and is_bge and "en" in path.name.lower():
        prompts = {"query": BGE_QUERY_INSTRUCTION}
    return EmbedderModelConfig(
        path=path,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        prompts=prompts,
        dim=dim,
    )


def _model_type_hint(path: Path) -> str:
    """The ``_name_or_path`` a transformers config.json remembers (how a renamed bge is spotted)."""
    try:
        return str(_read_json(path / "config.json").get("_name_or_path", ""))
    except (OSError, ConfigError):
        return ""
