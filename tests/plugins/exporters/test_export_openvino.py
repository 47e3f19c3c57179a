"""OpenVINO IR export (FP16 and NNCF INT8 weights), run by OpenVINO's CPU plugin."""
# ruff: noqa: F811  (pytest fixtures imported from the export fixtures module)

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwkit.errors import UsageError
from hwkit.plugins.exporters import OpenVINOExporter
from tests.plugins.exporters.test_export_fixtures import smol  # noqa: F401

TARGETS = {"fp16": (0.99, 0.99), "int8": (0.90, 0.97)}


def test_openvino_fp16_and_int8_agree_with_torch(smol: Path, tmp_path: Path) -> None:
    import openvino as ov

    assert OpenVINOExporter().export(smol, tmp_path, precision="fp16,int8") == tmp_path
    for precision, (target, decisive) in TARGETS.items():
        ir_dir = tmp_path / f"openvino-{precision}"
        figures = json.loads((ir_dir / "export.json").read_text())
        assert figures["top1_agreement"] >= target and figures["positions"] > 100, figures
        assert figures["decisive_agreement"] >= decisive, figures
        assert (ir_dir / "tokenizer.json").is_file() and (ir_dir / "config.json").is_file()
        model = ov.Core().read_model(str(ir_dir / "openvino_model.xml"))
        weight_types = {
            op.get_output_element_type(0).get_type_name()
            for op in model.get_ops()
            if op.get_type_name() == "Constant"
        }
        assert ("u8" if precision == "int8" else "f16") in weight_types
    assert set(json.loads((tmp_path / "export.json").read_text())) == {
        "openvino-fp16",
        "openvino-int8",
    }
    assert not list(tmp_path.glob(".*partial"))


def test_openvino_unknown_precision(smol: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown OpenVINO precision 'int3'"):
        OpenVINOExporter().export(smol, tmp_path, precision="int3")
    assert list(tmp_path.iterdir()) == []
