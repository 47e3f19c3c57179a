"""Architecture facts of a model, read from its config.json (never its weights).

The allocator needs only sizes: layers, hidden and intermediate widths, heads, KV heads,
head size, vocabulary and whether embeddings are tied. Configs for the models the project
names ship in ``model_configs/`` so plans work offline, addressable by hub name or alias.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from hwkit.allocator.stored import StoredWeights

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

# shipped file stem -> extra names it answers to (hub names are matched case-insensitively)
_SHIPPED: dict[str, tuple[str, ...]] = {
    "meta-llama--Llama-3.1-8B-Instruct": ("meta-llama/Llama-3.1-8B", "llama-3.1-8b"),
    "meta-llama--Llama-3.2-1B-Instruct": ("meta-llama/Llama-3.2-1B", "llama-3.2-1b"),
    "mistralai--Mistral-7B-Instruct-v0.3": (
        "mistralai/Mistral-7B-v0.3",
        "mistral-7b-v0.3",
        "mistral-7b",
    ),
    "Qwen--Qwen2.5-7B-Instruct": ("Qwen/Qwen2.5-7B", "qwen2.5-7b"),
    "microsoft--phi-2": ("phi-2",),
    "HuggingFaceTB--SmolLM2-135M-Instruct": (
        "HuggingFaceTB/SmolLM2-135M",
        "smollm2-135m",
        "smollm2-135m-instruct",
    ),
    "BAAI--bge-large-en-v1.5": ("bge-large-en-v1.5", "bge-large"),
    "sentence-transformers--all-MiniLM-L6-v2": ("all-MiniLM-L6-v2", "all-minilm-l6-v2", "minilm"),
}

_ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "nomic_bert"}
_TWO_MATRIX_MLP = {"phi", "gpt2", "gpt_neox", "gptj", "falcon", "starcoder2"} | _ENCODER_TYPES


def shipped_names() -> dict[str, Path]:
    """Every name a shipped config answers to (lower-cased) -> its file."""
    names: dict[str, Path] = {}
    for stem, aliases in _SHIPPED.items():
        path = CONFIG_DIR / f"{stem}.json"
        for name in (stem.replace("--", "/"), *aliases):
            names[name.lower()] = path
    return names


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of one transformer; everything the memory model reads."""

    name: str
    model_type: str
    num_layers: int
    hidden: int
    intermediate: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    max_positions: int
    encoder: bool = False
    source: str = ""
    stored: StoredWeights | None = None  # weights as an exported file holds them

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> ModelSpec:
        """A spec from a model directory, run directory, config.json file, or a known name.

        Paths resolve through :func:`hwkit.models.resolve` (the base model of a LoRA run);
        names resolve to the shipped configs, then to the local Hugging Face cache. Nothing
        is downloaded and no weights are read.
        """
        from hwkit.models import resolve

        text = str(name_or_path)
        path = Path(text).expanduser()
        known = shipped_names()
        if not path.exists() and text.lower() in known:
            return cls.from_config_file(known[text.lower()], name=text)
        try:
            resolved = resolve(text)
        except NotFoundError as exc:
            if path.exists() or text.startswith((".", "/", "~")) or path.suffix == ".json":
                raise
            raise NotFoundError(
                f"model {text!r} is neither a local path nor a shipped config",
                hint="known: " + ", ".join(sorted(set(_aliases()))),
            ) from exc
        if resolved.format == "gguf":
            from hwkit.allocator.stored import gguf_spec

            return gguf_spec(resolved.path)
        assert resolved.config_dir is not None  # HF and IR directories have one
        name = path.name if path.is_dir() else (path.parent.name or path.stem)
        if not path.exists():
            name = text
        config = resolved.config_dir / "config.json"
        if resolved.format == "openvino":
            from hwkit.allocator.stored import openvino_stored

            if not config.is_file():
                raise ConfigError(
                    f"{resolved.path}: OpenVINO IR without the config.json it was exported from",
                    hint="re-export it with hwkit export openvino, which writes config.json",
                )
            spec = cls.from_config_file(config, name=name)
            return replace(spec, stored=openvino_stored(resolved.path, spec))
        return cls.from_config_file(config, name=name)

    @classmethod
    def from_config_file(cls, path: Path, *, name: str | None = None) -> ModelSpec:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_config(data, name=name or path.stem, source=str(path))

    @classmethod
    def from_config(cls, data: dict[str, Any], *, name: str, source: str = "") -> ModelSpec:
        """A spec from a config mapping; names the missing field when one is absent."""
        data = dict(data.get("text_config") or {}, **data) if "text_config" in data else data

        def need(*keys: str) -> int:
            for key in keys:
                if data.get(key) is not None:
                    return int(data[key])
            raise ConfigError(
                f"{source or name}: field {keys[0]!r} missing",
                hint="the allocator needs the transformer's sizes from config.json",
            )

        model_type = str(data.get("model_type", "unknown"))
        hidden = need("hidden_size", "n_embd", "d_model")
        heads = need("num_attention_heads", "n_head")
        head_dim = int(data.get("head_dim") or hidden // heads)
        encoder = model_type in _ENCODER_TYPES
        return cls(
            name=name,
            model_type=model_type,
            num_layers=need("num_hidden_layers", "n_layer"),
            hidden=hidden,
            intermediate=int(data.get("intermediate_size") or data.get("n_inner") or 4 * hidden),
            num_heads=heads,
            num_kv_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            vocab=need("vocab_size"),
            tied_embeddings=bool(data.get("tie_word_embeddings", encoder)),
            max_positions=int(
                data.get("max_position_embeddings") or data.get("n_positions") or 2048
            ),
            encoder=encoder,
            source=source,
        )

    # -- sizes --------------------------------------------------------------------------
    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """3 for gated MLPs (SwiGLU: gate, up, down), 2 otherwise."""
        return 2 if self.model_type in _TWO_MATRIX_MLP else 3

    @property
    def layer_linear_params(self) -> int:
        """Weights of one block's linear layers (what LoRA targets and 4-bit quantises)."""
        attn = self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden
        return attn + self.mlp_matrices * self.hidden * self.intermediate

    @property
    def largest_matrix(self) -> int:
        """Elements of the largest per-layer weight (what one dequantised matmul needs)."""
        return max(self.hidden * self.intermediate, self.hidden * self.q_dim)

    @property
    def embedding_params(self) -> int:
        """Input embeddings (plus the untied output head, plus BERT's position table)."""
        params = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        if self.encoder:
            params += (self.max_positions + 2) * self.hidden
        return params

    @property
    def param_count(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden
        return self.num_layers * self.layer_linear_params + self.embedding_params + norms

    def lora_params(self, rank: int) -> int:
        """Adapter parameters with LoRA on every attention and MLP projection."""
        per_layer = rank * (
            (self.hidden + self.q_dim)  # q
            + 2 * (self.hidden + self.kv_dim)  # k, v
            + (self.q_dim + self.hidden)  # o
            + self.mlp_matrices * (self.hidden + self.intermediate)
        )
        return self.num_layers * per_layer

    def lora_modules(self) -> int:
        return 4 + self.mlp_matrices

    def lora_input_elems(self) -> int:
        """Per token and layer: the inputs of every adapted projection (q, k, v and gate,
        up read the block's hidden state, o the attention output, down the MLP's), which
        LoRA dropout copies and keeps for backward, one copy per projection."""
        mlp_in = (self.mlp_matrices - 1) * self.hidden + self.intermediate
        return 3 * self.hidden + self.q_dim + mlp_in


def _aliases() -> list[str]:
    return [stem.replace("--", "/") for stem in _SHIPPED] + [
        a for v in _SHIPPED.values() for a in v
    ]
