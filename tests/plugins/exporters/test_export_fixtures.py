"""Shared fixtures for the export and server tests: SmolLM2 and a LoRA run made with peft.

Import with
``from tests.plugins.exporters.test_export_fixtures import lora_run, merged_lora, smol``.
The adapter's B matrices are random (not peft's zeros) so merging changes the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixture_cache import built_once, package_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "smollm2-135m-instruct"
PERSONA = "You are Ada, a terse assistant."

# Test modules import these fixtures, so pytest sees one definition per module; this memo
# makes the expensive ones run once per process however many modules use them (and
# ``built_once`` once for all processes, where the suite runs on several).
_MEMO: dict[str, Path] = {}


@pytest.fixture(scope="session")
def smol() -> Path:
    """The local SmolLM2-135M-Instruct HF directory (converted once from the shipped GGUF)."""
    from hwkit.models import resolve_model

    return resolve_model(MODEL)


@pytest.fixture(scope="session")
def lora_run(smol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as the trainers write it: adapter, tokenizer, config.toml."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "lora_run" in _MEMO:
        return _MEMO["lora_run"]
    run = tmp_path_factory.mktemp("lora-run")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(smol), dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    model.save_pretrained(str(run))
    AutoTokenizer.from_pretrained(str(smol)).save_pretrained(str(run))
    (run / "config.toml").write_text(
        f'model = "{MODEL}"\nmethod = "lora"\nsystem = "{PERSONA}"\n', encoding="utf-8"
    )
    _MEMO["lora_run"] = run
    return run


@pytest.fixture(scope="session")
def merged_lora(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LoRA run merged into a standalone HF directory by the ``merged`` exporter."""
    import hwkit.plugins.exporters as exporters
    from hwkit.plugins.exporters import MergedExporter

    if "merged_lora" not in _MEMO:
        folder = built_once(
            "merged-lora",
            [*package_files(exporters), Path(__file__)],
            lambda out: MergedExporter().export(lora_run, out / "merged"),
        )
        _MEMO["merged_lora"] = folder / "merged"
    return _MEMO["merged_lora"]


@pytest.fixture(scope="session")
def smol_openvino_kv(smol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 exported once as KV-cache OpenVINO IRs, FP16 and INT8 weights, verified:
    ``OUT/openvino-kv-fp16/`` and ``OUT/openvino-kv-int8/`` (OUT is returned). Skipped,
    naming the extra, where openvino-tokenizers is not installed."""
    import hwkit.plugins.exporters as exporters
    from hwkit.extras import install_hint, is_available
    from hwkit.plugins.exporters import OpenVINOExporter

    if not is_available("openvino_tokenizers"):
        pytest.skip(f"openvino_tokenizers is not installed ({install_hint('openvino_tokenizers')})")
    if "smol_openvino_kv" not in _MEMO:
        _MEMO["smol_openvino_kv"] = built_once(
            "smol-openvino-kv",
            package_files(exporters),
            lambda out: OpenVINOExporter().export(smol, out, precision="fp16,int8", kv_cache=True),
        )
    return _MEMO["smol_openvino_kv"]
