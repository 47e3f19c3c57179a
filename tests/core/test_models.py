"""hwkit.models: SmolLM2's GGUF becomes a safetensors HF directory that predicts what the
GGUF-loaded model predicts; bad names and paths are one-line NotFoundErrors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hwkit.errors import NotFoundError
from hwkit.models import SMOLLM2, known_model, resolve_model


def test_known_names_and_hub_id_resolve_alike() -> None:
    assert known_model("smollm2-135m-instruct") is SMOLLM2
    assert known_model("HuggingFaceTB/SmolLM2-135M-Instruct") is SMOLLM2
    assert known_model("SmolLM2-135M-Instruct") is SMOLLM2
    assert known_model("gpt2") is None


def test_missing_path_is_one_line_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(NotFoundError) as err:
        resolve_model(missing)
    line = err.value.one_line()
    assert str(missing) in line and "\n" not in line
    with pytest.raises(NotFoundError, match=r"no config\.json"):
        resolve_model(tmp_path)
    with pytest.raises(NotFoundError, match="not found"):
        resolve_model("some-org/some-model-not-here")


def test_local_directory_and_config_file_resolve(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(tmp_path / "config.json") == tmp_path


@pytest.mark.slow
def test_converted_smollm2_predicts_like_the_gguf() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m-instruct")
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin")) and (path / "tokenizer.json").is_file()
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == path  # cached, same dir
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    converted = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    gguf = SMOLLM2.gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    )
    text = "The capital of France is"
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        a = converted(ids).logits[0, -1]
        b = reference(ids).logits[0, -1]
    assert int(a.argmax()) == int(b.argmax())
    assert torch.allclose(a, b, atol=1e-3)
    assert os.access(path, os.R_OK | os.X_OK)


def _hf_dir(path: Path, *, tokenizer: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def test_one_resolver_for_every_kind_of_model_path(tmp_path: Path) -> None:
    """Names, HF directories, LoRA runs, run folders with merged or embedder weights, GGUF
    files and OpenVINO IR all resolve in one place."""
    from hwkit.models import resolve

    base = _hf_dir(tmp_path / "base")
    hf = resolve(base)
    assert (hf.format, hf.weights_dir, hf.tokenizer_dir, hf.config_dir) == ("hf", base, base, base)

    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text('{"base_model_name_or_path": "elsewhere"}')
    (run / "adapter_model.safetensors").write_bytes(b"x")
    (run / "config.toml").write_text(f'model = "{base}"\nsystem_prompt = "You are Ada."\n')
    lora = resolve(run)
    assert (lora.adapter, lora.base, lora.weights_dir, lora.config_dir) == (run, base, base, base)
    assert lora.tokenizer_dir == base and lora.system == "You are Ada." and lora.label == "run"

    merged = tmp_path / "merged-run"
    _hf_dir(merged / "merged")
    (merged / "config.toml").write_text('model = "smollm2-135m-instruct"\n')
    assert resolve(merged).weights_dir == merged / "merged"
    embedder_run = tmp_path / "emb"
    _hf_dir(embedder_run / "model")
    assert resolve(embedder_run).path == embedder_run / "model"

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    as_gguf = resolve(gguf)
    assert as_gguf.format == "gguf" and as_gguf.config_dir is None
    with pytest.raises(Exception, match="no Hugging Face weights directory"):
        _ = as_gguf.weights_dir

    ir = tmp_path / "ir"
    ir.mkdir()
    (ir / "openvino_model.xml").write_text("<net/>")
    assert resolve(ir).format == "openvino"
    # an exported IR keeps the config.json it came from: still an IR, not a HF directory
    (ir / "config.json").write_text("{}")
    assert resolve(ir).format == "openvino"

    broken_run = tmp_path / "broken"
    broken_run.mkdir()
    (broken_run / "adapter_config.json").write_text("{}")
    with pytest.raises(NotFoundError, match="did not finish saving"):
        resolve(broken_run)
    with pytest.raises(NotFoundError, match="no model given"):
        resolve(None)
    assert resolve(None, default=str(base)).path == base
