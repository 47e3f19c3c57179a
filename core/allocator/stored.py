"""What an exported model file already holds: its sizes, weight format and bytes.

A GGUF file or an OpenVINO IR is planned from what is on disk, not from a config and a
dtype: the weights are already quantised (Q4_K_M, INT8, INT4…), so the plan counts the
stored bytes. A GGUF carries the transformer's sizes in its metadata (no config.json);
an IR directory carries the config.json it was exported from. Nothing here loads weights.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.errors import ConfigError
from hwkit.extras import require

if TYPE_CHECKING:
    from hwkit.allocator.spec import ModelSpec


@dataclass(frozen=True)
class StoredWeights:
    """Weights in the form a runtime reads them as stored; the plan does not re-quantise.

    ``kv_dtype`` is the KV cache's element type where the format's runtime fixes it
    (llama.cpp keeps an f16 cache by default), else None (the plan's dtype).
    """

    format: str  # "gguf" or "openvino"
    quantization: str  # e.g. "q4_k_m", "int8", "float16"
    bytes: int
    kv_dtype: str | None = None


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def gguf_spec(path: Path) -> ModelSpec:
    """Sizes, weight format and stored bytes of a GGUF file, from its metadata.

    Parsing the metadata takes seconds (gguf's reader walks every field, the tokenizer's
    ~50k-entry arrays included), and a server plans the same file on every load and swap:
    the spec is kept per file, keyed by its size and modification time.
    """
    try:
        stat = Path(path).stat()
    except OSError as exc:
        raise ConfigError(f"{path}: not a readable GGUF file: {exc}") from None
    spec = _gguf_spec(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    return dataclasses.replace(spec, name=Path(path).name, source=str(path))


@functools.lru_cache(maxsize=32)
def _gguf_spec(resolved: str, size: int, mtime_ns: int) -> ModelSpec:
    from hwkit.allocator.spec import ModelSpec

    path = Path(resolved)
    gguf = require("gguf", purpose="planning a GGUF model")
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable GGUF file: {exc}") from None
    arch = _field(reader, "general.architecture")
    if not arch:
        raise ConfigError(f"{path}: GGUF metadata has no general.architecture")

    def need(key: str) -> int:
        value = _field(reader, f"{arch}.{key}")
        if value is None:
            raise ConfigError(
                f"{path}: GGUF metadata field {arch}.{key!r} missing",
                hint="re-export the model with hwkit export gguf",
            )
        return int(value)

    hidden = need("embedding_length")
    heads = need("attention.head_count")
    kv_heads = _field(reader, f"{arch}.attention.head_count_kv")
    head_dim = _field(reader, f"{arch}.attention.key_length") or hidden // heads
    vocab = _field(reader, f"{arch}.vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else 0
    names = {t.name for t in reader.tensors}
    stored = sum(int(t.n_bytes) for t in reader.tensors)
    return ModelSpec(
        name=path.name,
        model_type=str(arch),
        num_layers=need("block_count"),
        hidden=hidden,
        intermediate=need("feed_forward_length"),
        num_heads=heads,
        num_kv_heads=int(kv_heads or heads),
        head_dim=int(head_dim),
        vocab=int(vocab),
        tied_embeddings="output.weight" not in names,
        max_positions=need("context_length"),
        source=str(path),
        stored=StoredWeights("gguf", _gguf_file_type(gguf, reader), stored, kv_dtype="float16"),
    )


def _gguf_file_type(gguf: Any, reader: Any) -> str:
    """The file's weight format as llama.cpp names it (``MOSTLY_Q4_K_M`` -> ``q4_k_m``)."""
    code = _field(reader, "general.file_type")
    if code is None:
        return "gguf"
    try:
        name = str(gguf.LlamaFileType(int(code)).name)
    except ValueError:
        return f"gguf-type-{code}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def openvino_stored(directory: Path, spec: ModelSpec) -> StoredWeights:
    """An IR's stored weight bytes, and the format they imply (bits per weight)."""
    stored = sum(p.stat().st_size for p in directory.glob("*.bin") if "tokenizer" not in p.name)
    per_weight = stored / max(1, spec.param_count)
    if per_weight >= 3:
        label = "float32"
    elif per_weight >= 1.5:
        label = "float16"
    elif per_weight >= 0.85:
        label = "int8"
    else:
        label = "int4"
    return StoredWeights("openvino", label, stored)
