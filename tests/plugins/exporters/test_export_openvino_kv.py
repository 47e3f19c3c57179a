"""The KV-cache (stateful) OpenVINO IR: its layout, its verification figures, the option
that selects it, and the refusals around it. SmolLM2 is exported once (FP16 and INT8)."""
# ruff: noqa: F811  (pytest fixtures imported from the export fixtures module)

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hwkit.errors import UsageError
from hwkit.plugins.exporters import OpenVINOExporter
from hwkit.plugins.exporters.cli import export_options
from hwkit.plugins.exporters.errors import VerificationError
from hwkit.plugins.exporters.openvino_export import IR_NAME
from hwkit.plugins.exporters.openvino_stateful import (
    INPUTS,
    Greedy,
    check_supported,
    greedy_figures,
    is_stateful_xml,
    require_greedy,
)
from tests.plugins.exporters.test_export_fixtures import smol, smol_openvino_kv  # noqa: F401

SMOL_LAYERS = 30


def test_kv_cache_ir_is_stateful_with_tokenizer_irs(smol_openvino_kv: Path) -> None:
    import openvino as ov

    for precision in ("fp16", "int8"):
        folder = smol_openvino_kv / f"openvino-kv-{precision}"
        model = ov.Core().read_model(str(folder / IR_NAME))
        assert [p.get_any_name() for p in model.inputs] == list(INPUTS)
        assert [p.get_any_name() for p in model.outputs] == ["logits"]
        assert len(model.get_sinks()) == 2 * SMOL_LAYERS  # keys and values of every layer
        assert is_stateful_xml(folder / IR_NAME)
        for name in (
            "openvino_tokenizer.xml",
            "openvino_detokenizer.xml",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
        ):
            assert (folder / name).is_file(), name
    report = json.loads((smol_openvino_kv / "export.json").read_text())
    assert set(report) == {"openvino-kv-fp16", "openvino-kv-int8"}
    assert not list(smol_openvino_kv.glob(".*partial"))


def test_fp16_greedy_generation_equals_torch(smol_openvino_kv: Path) -> None:
    """The export's own check: greedy replies through the state equal the float32 torch
    model's, the tokenizer IRs agree with the HF tokenizer, the chat template is kept."""
    figures = json.loads((smol_openvino_kv / "openvino-kv-fp16" / "export.json").read_text())
    assert figures["kv_cache"] is True and figures["verified"] is True
    assert figures["greedy_equal"] == figures["greedy_prompts"] == 4, figures
    assert figures["greedy_prefix_agreement"] == 1.0
    assert figures["top1_agreement"] >= 0.99 and figures["positions"] > 100
    assert figures["tokenizer_agreement"] == figures["detokenizer_agreement"] == 1.0
    assert figures["chat_template"] == "kept"
    assert "f16" in figures["weight_types"]


def test_int8_weights_are_compressed_and_measured(smol_openvino_kv: Path) -> None:
    figures = json.loads((smol_openvino_kv / "openvino-kv-int8" / "export.json").read_text())
    assert "u8" in figures["weight_types"]
    assert figures["top1_agreement"] >= 0.90 and figures["decisive_agreement"] >= 0.97
    # measured, not gated: the greedy replies' agreement with torch's
    assert 0.0 < figures["greedy_prefix_agreement"] <= 1.0
    assert len(figures["greedy_divergence_margins"]) == 4 - figures["greedy_equal"]


def test_kv_cache_is_an_option_of_the_openvino_exporter_only() -> None:
    from hwkit.plugins.exporters import GGUFExporter

    flags = {"kv_cache": True}
    assert export_options(OpenVINOExporter, "openvino", flags, []) == {"kv_cache": True}
    given = export_options(OpenVINOExporter, "openvino", {}, ["kv_cache=true", "quant=int4"])
    assert given == {"kv_cache": True, "precision": "int4"}
    with pytest.raises(UsageError, match=r"^the gguf exporter does not take --kv-cache"):
        export_options(GGUFExporter, "gguf", flags, [])


def test_kv_cache_verification_on_an_npu_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"KV-cache IR is verified on the CPU or a GPU"):
        OpenVINOExporter().export(Path("no-such-model"), tmp_path, kv_cache=True, device="NPU")
    assert list(tmp_path.iterdir()) == []


def test_models_with_sliding_window_layers_are_refused() -> None:
    config = SimpleNamespace(
        architectures=["Gemma3ForCausalLM"],
        layer_types=["sliding_attention", "full_attention"],
        is_encoder_decoder=False,
    )
    with pytest.raises(UsageError, match=r"full-attention decoders; Gemma3ForCausalLM has"):
        check_supported(SimpleNamespace(config=config))


def test_greedy_gate_tolerates_near_ties_only() -> None:
    ref = [Greedy([1], [5, 6, 7], [3.0, 0.1, 2.0]), Greedy([1], [5, 6, 7], [3.0, 2.0, 2.0])]
    near_tie = greedy_figures(ref, [[5, 9, 9], [5, 6, 7]])
    assert near_tie["greedy_equal"] == 1 and near_tie["greedy_divergence_margins"] == [0.1]
    require_greedy(near_tie, "IR", hint="")
    decisive = greedy_figures(ref, [[5, 6, 7], [5, 9, 9]])
    assert decisive["greedy_prefix_agreement"] == pytest.approx(4 / 6)
    with pytest.raises(VerificationError, match=r"left the torch model's at a decisive token"):
        require_greedy(decisive, "IR", hint="")
