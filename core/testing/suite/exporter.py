"""Contract tests for :class:`hwkit.exporter.Exporter`.

Fixtures a subclass supplies (the base class's raise NotImplementedError, as fsspec's
abstract tests do):

* ``exporter``: an instance;
* ``export_case``: an :class:`ExportCase`, a source this exporter can export on this
  machine with the options of a cheap export that is verified. :func:`kit_model` and
  :func:`kit_lora_run` build small sources to use.

What an exporter needs that may be absent (llama.cpp, OpenVINO) is for ``export_case`` to
declare: skip there, with the reason, only when it really is absent.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import NotFoundError
from hwkit.exporter import Exporter, ExportOptions

REPORT = "export.json"
# The kit model is random: about 1% of its positions are near-ties that rounding to 16 bits
# may flip (measured 0.991-0.996 top-1 agreement for GGUF f16 and OpenVINO FP16). The gate
# over all positions is lowered to this where an exporter takes ``min_agreement``; the gate
# over decisive positions stays the exporter's own (1.000 measured).
KIT_MIN_AGREEMENT = 0.95


@dataclass(frozen=True)
class ExportCase:
    """What the kit exports: a source, and the options for a cheap verified export."""

    source: Path
    options: dict[str, Any] = field(default_factory=dict)


def kit_model(folder: Path) -> Path:
    """A small random Llama (2 layers, 64 wide, 8 MB in f16) with SmolLM2's tokenizer and
    chat template: cheap to export and verify. Weights are exactly representable in
    float16, so a 16-bit export stores them unchanged."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hwkit.models import SMOLLM2, resolve

    if (folder / "config.json").is_file():
        return folder
    smol = resolve(SMOLLM2.name).path
    config = AutoConfig.from_pretrained(str(smol), local_files_only=True)
    config.update(
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "initializer_range": 0.5,  # sharp logits: most positions are decisive
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    for item in smol.iterdir():
        if item.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(item, tmp / item.name)
    tmp.rename(folder)
    return folder


def kit_lora_run(base: Path, folder: Path) -> Path:
    """A training run directory over ``base`` as the trainers write it: a LoRA adapter
    (random B, so merging changes the model), the tokenizer and ``config.toml``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (folder / "adapter_config.json").is_file():
        return folder
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    (folder / "config.toml").write_text(f'model = "{base}"\nmethod = "lora"\n', encoding="utf-8")
    return folder


def artefact_figures(artefact: Path) -> dict[str, Any]:
    """The figures an export recorded for ``artefact``: a folder's own ``export.json``, else
    its entry in the ``export.json`` beside it."""
    own = artefact / REPORT
    if artefact.is_dir() and own.is_file():
        figures: dict[str, Any] = json.loads(own.read_text(encoding="utf-8"))
        return figures
    beside = artefact.parent / REPORT
    assert beside.is_file(), f"no {REPORT} in or beside {artefact}"
    entry = json.loads(beside.read_text(encoding="utf-8")).get(artefact.name)
    assert isinstance(entry, dict), f"{beside} has no entry for {artefact.name}"
    return entry


def _written(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


class ExporterContract:
    @pytest.fixture(scope="class")
    def exporter(self) -> Exporter:
        raise NotImplementedError("supply an `exporter` fixture: the exporter under test")

    @pytest.fixture(scope="class")
    def export_case(self) -> ExportCase:
        raise NotImplementedError(
            "supply an `export_case` fixture: a source this exporter takes, and its options"
        )

    def test_identity(self, exporter: Exporter) -> None:
        assert isinstance(exporter, Exporter)
        assert isinstance(exporter.name, str) and exporter.name
        assert isinstance(exporter.description, str)

    def test_options_model_has_defaults(self, exporter: Exporter) -> None:
        assert issubclass(exporter.options_model, ExportOptions)
        options = exporter.options_model()
        assert options.verify is True  # verification is on unless turned off
        again = exporter.options_model.model_validate_json(options.model_dump_json())
        assert again == options

    def test_options_model_forbids_unknown_options(self, exporter: Exporter) -> None:
        from pydantic import ValidationError

        with pytest.raises(ValidationError):
            exporter.options_model.model_validate({"no_such_option_xyz": 1})

    def test_missing_source_is_not_found_and_writes_nothing(
        self, exporter: Exporter, export_case: ExportCase, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        with pytest.raises(NotFoundError):
            exporter.export(tmp_path / "no-such-model", out, **export_case.options)
        assert _written(out) == []

    def test_export_leaves_a_verified_artefact(
        self, exporter: Exporter, export_case: ExportCase, tmp_path: Path
    ) -> None:
        out = tmp_path / "out"
        artefact = exporter.export(export_case.source, out, **export_case.options)
        assert artefact.exists(), artefact
        assert artefact == out or out in artefact.parents, (artefact, out)
        figures = artefact_figures(artefact)
        assert figures.get("verified") is True, figures
        leftovers = [p for p in _written(tmp_path) if p.name.endswith(".partial")]
        assert leftovers == [], leftovers
