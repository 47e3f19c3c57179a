"""Shared fixtures for the export and server tests: SmolLM2 and a LoRA run made with peft.

Import with
``from tests.plugins.exporters.test_export_fixtures import lora_run, merged_lora, smol``.
The adapter's B matrices are random (not peft's zeros) so merging changes the model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

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
    from hwkit.plugins.exporters import MergedExporter

    if "merged_lora" not in _MEMO:
        out = tmp_path_factory.mktemp("merged") / "merged"
        _MEMO["merged_lora"] = MergedExporter().export(lora_run, out)
    return _MEMO["merged_lora"]


@pytest.fixture(scope="session")
def smol_openvino_kv(smol: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 exported once as KV-cache OpenVINO IRs, FP16 and INT8 weights, verified:
    ``OUT/openvino-kv-fp16/`` and ``OUT/openvino-kv-int8/`` (OUT is returned). Skipped,
    naming the extra, where openvino-tokenizers is not installed."""
    from hwkit.extras import install_hint, is_available
    from hwkit.plugins.exporters import OpenVINOExporter

    if not is_available("openvino_tokenizers"):
        pytest.skip(f"openvino_tokenizers is not installed ({install_hint('openvino_tokenizers')})")
    if "smol_openvino_kv" not in _MEMO:
        _MEMO["smol_openvino_kv"] = built_once(
            "smol-openvino-kv",
            ("openvino_export.py", "openvino_stateful.py", "verify.py"),
            lambda out: OpenVINOExporter().export(smol, out, precision="fp16,int8", kv_cache=True),
        )
    return _MEMO["smol_openvino_kv"]


def built_once(name: str, sources: tuple[str, ...], build: Callable[[Path], object]) -> Path:
    """A fixture's output built once for every test process (pytest-xdist workers too):
    under a file lock in the test cache, keyed by the exporter sources it depends on, so a
    changed exporter builds afresh; the first process builds, the others wait and reuse."""
    import fcntl
    import hashlib

    import hwkit.plugins.exporters as exporters
    from hwkit.paths import cache_root

    folder = Path(exporters.__file__).parent
    digest = hashlib.sha256(b"".join((folder / f).read_bytes() for f in sources)).hexdigest()
    root = cache_root() / "test-fixtures"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{digest[:12]}"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            staging = root / f".{name}-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            build(staging)
            (staging / ".complete").touch()
            os.replace(staging, target)
    return target
