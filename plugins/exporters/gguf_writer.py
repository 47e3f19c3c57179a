"""Hugging Face Llama-family weights to a GGUF file (f16 or q8_0) with the ``gguf`` package.

Mirrors what llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaModel``: tensor names
through ``gguf.TensorNameMap``, Q/K rows permuted into llama.cpp's rotary layout, norms kept
in float32, a byte-level BPE ("gpt2") vocabulary with merges, special ids and the chat
template. Nothing is compiled: llama.cpp is only needed later, to verify and for q4_k_m.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


from hwkit.errors import UsageError
from hwkit.log import get_logger

log = get_logger(__name__)

# HF architectures llama.cpp runs as MODEL_ARCH.LLAMA.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
SUPPORTED_ROPE = ("default", "linear")
WRITER_QUANTS = ("f16", "q8_0")


def check_supported(config: dict[str, Any]) -> None:
    """Refuse, in one line, what this writer cannot convert faithfully."""
    archs = config.get("architectures") or [config.get("model_type", "?")]
    if archs[0] not in SUPPORTED_ARCHITECTURES:
        raise UsageError(
            f"GGUF export does not support architecture {archs[0]!r}",
            hint=f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}; use `hwkit export openvino` "
            "or llama.cpp's convert_hf_to_gguf.py",
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in SUPPORTED_ROPE:
        raise UsageError(
            f"GGUF export does not support rope type {rope_type!r}",
            hint=f"supported: {', '.join(SUPPORTED_ROPE)}",
        )


def permute_qk(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """HF's rotate-half Q/K rows to llama.cpp's interleaved layout (as convert_hf_to_gguf)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return float(theta), rope


def tensors(state: dict[str, Any], config: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every tensor llama.cpp needs, Q/K permuted."""

    import gguf

    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    tied = bool(config.get("tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    for hf_name, tensor in state.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if tied and hf_name == "lm_head.weight":
            continue
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_qk(data, n_head, n_head)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_qk(data, n_head, n_kv)
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UsageError(f"GGUF export cannot map tensor {hf_name!r} to a llama.cpp name")
        yield new, data


def _pretokenizer(vocab: dict[str, int]) -> str:
    """llama.cpp's pre-tokenizer name. llama.cpp hashes a probe text's ids to pick it; we
    recognise the families we ship and fall back to llama.cpp's default (and say so)."""
    if "<|begin_of_text|>" in vocab:
        return "llama-bpe"
    if "<|im_start|>" in vocab and len(vocab) <= 49152 + 256:
        return "smollm"
    log.warning("gguf.pretokenizer_default", hint="verify tokenisation with llama.cpp")
    return "default"


def vocabulary(tokenizer_dir: Path, tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """Tokens, token types, merges and special ids from ``tokenizer.json``."""
    import gguf

    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise UsageError(
            f"{path} is missing", hint="GGUF export needs a fast (tokenizer.json) tokenizer"
        )
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UsageError(
            f"{path}: tokenizer model {model.get('type')!r} (byte_fallback="
            f"{model.get('byte_fallback')}) is not byte-level BPE",
            hint="GGUF export writes gpt2-style BPE vocabularies only (Llama-3, SmolLM2)",
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, tok in added.items():
        vocab[content] = tok["id"]
    by_id = {i: t for t, i in vocab.items()}
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        tok = by_id.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif tok in added:
            tokens.append(tok)
            types.append(
                gguf.TokenType.CONTROL if added[tok].get("special") else gguf.TokenType.USER_DEFINED
            )
        else:
            tokens.append(tok)
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    add_bos = bool(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
    return {
        "tokens": tokens,
        "types": types,
        "merges": merges,
        "pre": _pretokenizer(vocab),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
        "add_bos": add_bos,
        "chat_template": tokenizer.chat_template,
    }


def write_gguf(
    path: Path,
    *,
    state: dict[str, Any],
    config: dict[str, Any],
    tokenizer: Any,
    tokenizer_dir: Path,
    quant: str,
    name: str,
) -> dict[str, int]:
    """Write a complete GGUF file at ``path``; returns tensor counts per GGML type."""
    import gguf
    import numpy as np

    check_supported(config)
    if quant not in WRITER_QUANTS:
        raise UsageError(f"the GGUF writer makes {', '.join(WRITER_QUANTS)}, not {quant!r}")
    qtype = gguf.GGMLQuantizationType.F16 if quant == "f16" else gguf.GGMLQuantizationType.Q8_0
    ftype = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    n_head = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    theta, rope = _rope(config)
    voc = vocabulary(tokenizer_dir, tokenizer, int(config["vocab_size"]))

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(theta)
    if (rope.get("rope_type") or rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(len(voc["tokens"]))
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(voc["pre"])
    writer.add_token_list(voc["tokens"])
    writer.add_token_types(voc["types"])
    writer.add_token_merges(voc["merges"])
    for setter, value in (
        (writer.add_bos_token_id, voc["bos"]),
        (writer.add_eos_token_id, voc["eos"]),
        (writer.add_unk_token_id, voc["unk"]),
        (writer.add_pad_token_id, voc["pad"]),
    ):
        if value is not None:
            setter(int(value))
    writer.add_add_bos_token(voc["add_bos"])
    if voc["chat_template"]:
        writer.add_chat_template(voc["chat_template"])

    counts: dict[str, int] = {}
    for gguf_name, data in tensors(state, config):
        if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
            out, dtype = data.astype(np.float32), gguf.GGMLQuantizationType.F32
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
            out, dtype = gguf.quants.quantize(data, qtype), qtype
        else:
            out, dtype = data.astype(np.float16), gguf.GGMLQuantizationType.F16
        writer.add_tensor(gguf_name, out, raw_dtype=dtype)
        counts[dtype.name] = counts.get(dtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts
