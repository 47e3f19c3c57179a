"""What an export starts from: a run directory (LoRA adapter + base), a merged HF directory,
or a known model name; resolved once so every exporter reads the same weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomllib

from hwkit.errors import ConfigError, NotFoundError
from hwkit.log import get_logger

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class Source:
    """A resolved export source: the base HF directory and, for a run, its adapter."""

    given: Path | str
    base: Path
    adapter: Path | None
    tokenizer_dir: Path
    system: str | None = None

    @property
    def label(self) -> str:
        """A short name for file names: the run or model directory's name."""
        name = Path(str(self.given)).name or "model"
        return name.replace(" ", "-")

    def config(self) -> dict[str, Any]:
        """The base model's config.json, read without loading weights."""
        return json.loads((self.base / "config.json").read_text(encoding="utf-8"))

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(self.tokenizer_dir), local_files_only=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def load_model(self, *, merge: bool = True, dtype: torch.dtype | None = None) -> Any:
        """The torch model in eval mode; with an adapter, merged into the base unless
        ``merge=False`` (then a PeftModel, the reference a merge is checked against)."""
        import torch
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(
            str(self.base), dtype=dtype or torch.float32, local_files_only=True
        )
        if self.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter), is_trainable=False)
            if merge:
                model = model.merge_and_unload()
        return model.eval()


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _read_run_config(run: Path) -> dict[str, Any]:
    path = run / "config.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML or remove the file") from exc


def _system_from(run_config: dict[str, Any]) -> str | None:
    for key in ("system", "system_prompt", "persona"):
        value = run_config.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def resolve_source(given: str | Path) -> Source:
    """Turn a run directory, HF directory or known model name into a :class:`Source`.

    A run directory with ``adapter_config.json`` names its base in ``config.toml``
    (``model``) or in the adapter config (``base_model_name_or_path``); a run directory
    with neither adapter nor weights is an error, as is a source without a tokenizer.
    """
    from hwkit.models import resolve_model

    path = Path(given).expanduser()
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise NotFoundError(
                f"run directory {str(path)!r} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}",
                hint="the training run did not finish saving; re-run or pick a checkpoint",
            )
        run_config = _read_run_config(path)
        adapter_cfg = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base_name = run_config.get("model") or adapter_cfg.get("base_model_name_or_path")
        if not base_name:
            raise ConfigError(
                f"{path / 'config.toml'}: field 'model' is missing",
                hint="name the base model the adapter was trained on",
            )
        base = resolve_model(str(base_name))
        tok_dir = path if _has_tokenizer(path) else base
        if not _has_tokenizer(tok_dir):
            raise NotFoundError(
                f"no tokenizer in {str(path)!r} or its base {str(base)!r}",
                hint="save the tokenizer into the run directory",
            )
        return Source(given, base, path, tok_dir, _system_from(run_config))
    if path.is_dir() and not (path / "config.json").is_file():
        if (path / "merged" / "config.json").is_file():
            inner = resolve_source(path / "merged")
            return Source(
                given, inner.base, None, inner.tokenizer_dir, _system_from(_read_run_config(path))
            )
        if (path / "config.toml").is_file() or (path / "plan.json").is_file():
            raise NotFoundError(
                f"run directory {str(path)!r} has no adapter ({ADAPTER_CONFIG}) and no "
                "merged weights",
                hint="train with method = 'lora' or pass a model directory",
            )
    base = resolve_model(str(given))
    if not _has_tokenizer(base):
        raise NotFoundError(
            f"model directory {str(base)!r} has no tokenizer (tokenizer.json)",
            hint="copy the tokenizer files next to config.json",
        )
    return Source(given, base, None, base, _system_from(_read_run_config(base)))
