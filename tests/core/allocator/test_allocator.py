"""The allocator plans what the hardware can run, says why, and refuses with a nearby plan."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from hwkit.allocator import Job, ModelSpec, Settings, candidates, estimate, plan
from hwkit.allocator.spec import CONFIG_DIR, shipped_names
from hwkit.errors import ConfigError, NoFitError, NotFoundError, UsageError
from hwkit.plan import Plan
from hwkit.plugin_manager import load_plugins
from hwkit.testing import MockDevice

PROFILES = load_plugins().profiles
LLAMA8B = ModelSpec.from_pretrained("meta-llama/Llama-3.1-8B-Instruct")
SMOL = ModelSpec.from_pretrained("smollm2-135m")
HOST = (
    64 * 1024**3
)  # a fixed host for shared-memory profiles, so results do not depend on this machine


def mock(name: str) -> MockDevice:
    return MockDevice(PROFILES.get(name), host_total=HOST)


def lora_job(**kw: object) -> Job:
    args: dict[str, object] = {
        "kind": "sft",
        "seq_len": 1024,
        "effective_batch": 16,
        "lora_rank": 16,
    }
    args.update(kw)
    return Job(model=LLAMA8B, **args)  # type: ignore[arg-type]


# -- model specs -------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_param_count_matches_transformers(path: Path) -> None:
    """The count from config.json agrees with the model transformers builds (on meta)."""
    import torch
    import transformers

    data = json.loads(path.read_text())
    config = transformers.AutoConfig.for_model(**data)
    spec = ModelSpec.from_config_file(path)
    with torch.device("meta"):
        auto = transformers.AutoModel if spec.encoder else transformers.AutoModelForCausalLM
        model = auto.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    assert spec.param_count == pytest.approx(real, rel=0.01)


def test_names_and_aliases_resolve_to_shipped_configs() -> None:
    for name in ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m", "SMOLLM2-135M"):
        assert ModelSpec.from_pretrained(name).num_layers == 30
    assert ModelSpec.from_pretrained("llama-3.1-8b").vocab == 128256
    assert ModelSpec.from_pretrained("all-MiniLM-L6-v2").encoder
    assert len(set(shipped_names().values())) == 8


def test_reads_a_model_directory_or_config_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((CONFIG_DIR / "microsoft--phi-2.json").read_text())
    assert ModelSpec.from_pretrained(tmp_path).hidden == 2560
    assert ModelSpec.from_pretrained(tmp_path / "config.json").num_heads == 32
    with pytest.raises(NotFoundError, match="does not exist"):
        ModelSpec.from_pretrained(tmp_path / "missing" / "config.json")


# -- plans differ where the hardware differs -------------------------------------------------
def test_llama8b_lora_plans_follow_the_hardware() -> None:
    plans: dict[str, Plan | NoFitError] = {}
    for name in ("h200", "rtx5090", "t4", "arc-meteor-lake", "cpu"):
        try:
            plans[name] = plan(lora_job(), devices=[mock(name)])
        except NoFitError as exc:
            plans[name] = exc
    h200 = plans["h200"]
    assert isinstance(h200, Plan)
    assert (h200.dtype, h200.quantization, h200.present) == ("bfloat16", "none", False)
    t4 = plans["t4"]
    assert isinstance(t4, NoFitError) or (t4.dtype, t4.quantization) == ("float16", "nf4")
    arc = plans["arc-meteor-lake"]
    assert isinstance(arc, Plan) and arc.dtype == "float16"
    cpu = plans["cpu"]
    assert isinstance(cpu, Plan) and cpu.dtype == "float32" and cpu.quantization == "none"
    fitting = [p for p in plans.values() if isinstance(p, Plan)]
    assert h200.micro_batch == max(p.micro_batch for p in fitting) >= 8
    for p in fitting:
        assert p.estimate.total <= p.budget
        assert p.effective_batch == 16
        assert set(p.reasons) >= {"dtype", "quantization", "micro_batch", "budget", "device"}


def test_dpo_needs_more_than_sft() -> None:
    settings = Settings(
        "bfloat16", "none", 4, False, "sdpa", mock("rtx5090").profile.memory.traits()
    )
    sft = Job("sft", LLAMA8B, seq_len=1024, effective_batch=16, micro_batch=4)
    dpo = Job("dpo", LLAMA8B, seq_len=1024, effective_batch=16, micro_batch=4)
    assert estimate(dpo, settings).total > estimate(sft, settings).total
    assert estimate(dpo, settings).activations == 2 * estimate(sft, settings).activations
    device = mock("rtx5090")
    assert (
        plan(lora_job(kind="dpo"), devices=[device]).micro_batch
        <= plan(lora_job(), devices=[device]).micro_batch
    )


def test_pressure_shrinks_the_budget_and_the_plan() -> None:
    device = mock("h200")
    calm = plan(lora_job(), devices=[device])
    device.apply_pressure(0.6)
    pressed = plan(lora_job(), devices=[device])
    assert pressed.budget < calm.budget
    assert pressed.budget <= device.memory().free
    assert pressed.estimate.total < calm.estimate.total
    assert pressed.micro_batch < calm.micro_batch or (
        pressed.gradient_checkpointing and not calm.gradient_checkpointing
    )
    device.apply_pressure(0.99)
    with pytest.raises(NoFitError):
        plan(lora_job(), devices=[device])


def test_two_jobs_share_one_device() -> None:
    device = mock("rtx5090")
    job = Job("sft", SMOL, seq_len=1024, effective_batch=64)
    first = plan(
        Job("sft", SMOL, seq_len=1024, effective_batch=64, micro_batch=4), devices=[device]
    )
    alone = plan(job, devices=[device])
    second = plan(job, devices=[device], reserved={device.id: first.estimate.total})
    assert second.micro_batch < alone.micro_batch
    assert second.budget == first.budget - first.estimate.total
    assert first.estimate.total + second.estimate.total <= first.budget
    assert "already planned" in second.reasons["budget"]


def test_devices_are_ranked_and_npu_only_serves_inference() -> None:
    devices = [mock("cpu"), mock("intel-npu-meteor-lake"), mock("h200")]
    ranked = candidates(Job("sft", SMOL, seq_len=512, effective_batch=8), devices=devices)
    assert [p.profile for p in ranked] == ["h200", "cpu"]
    assert "inference only" in ranked[0].reasons["device"]
    npu_embed = plan(
        Job("embed", "all-MiniLM-L6-v2", seq_len=256, effective_batch=64),
        devices=[mock("intel-npu-meteor-lake")],
    )
    assert npu_embed.dtype == "float16" and npu_embed.lora_rank is None


def test_generate_counts_the_kv_cache() -> None:
    job = Job("generate", LLAMA8B, seq_len=8192, effective_batch=8)
    p = plan(job, devices=[mock("h200")])
    kv = 2 * 32 * 8 * 128 * 8192 * p.micro_batch * 2  # layers, kv heads, head dim, tokens, bf16
    assert p.estimate.kv_cache == kv
    assert not p.gradient_checkpointing and p.estimate.gradients == 0


def test_absent_profile_from_env_is_marked_not_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWKIT_PROFILE", "h200")
    p = plan(Job("sft", SMOL, seq_len=512, effective_batch=8))
    assert p.profile == "h200" and not p.present and p.device == "cuda:0"
    assert "NOT present" in p.reasons["device"]


# -- refusals and bad input --------------------------------------------------------------------
def test_refusal_names_the_nearest_plan_that_fits() -> None:
    job = lora_job(seq_len=8192, quantization="none")
    with pytest.raises(NoFitError) as info:
        plan(job, devices=[mock("t4")])
    assert "nearest plan that fits: --quantization nf4 --seq-len 2048" in str(info.value)
    nearest = info.value.nearest  # type: ignore[attr-defined]
    assert isinstance(nearest, Plan) and nearest.estimate.total <= nearest.budget
    with pytest.raises(NoFitError) as info:
        plan(Job("full", LLAMA8B, seq_len=2048, effective_batch=8), devices=[mock("t4")])
    assert "nearest plan that fits" in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"has no config\.json"):
        ModelSpec.from_pretrained(tmp_path)
    with pytest.raises(UsageError, match="exceeds smollm2-135m's limit of 8192"):
        Job("sft", SMOL, seq_len=9000)
    with pytest.raises(UsageError, match="effective batch 0"):
        Job("sft", SMOL, effective_batch=0)
    with pytest.raises(UsageError, match="does not divide"):
        Job("sft", SMOL, effective_batch=12, micro_batch=8)
    bad = tmp_path / "nomem.toml"
    bad.write_text(
        'name = "nomem"\ndisplay_name = "No memory"\nsource = "test"\n'
        '[match]\nkind = "cuda"\n[memory]\n[compute]\nnative_dtypes = ["float32"]\n'
    )
    with pytest.raises(ConfigError, match="'nomem' has no memory figure"):
        plan(Job("sft", SMOL), profile=str(bad))
    broken = tmp_path / "broken" / "config.json"
    broken.parent.mkdir()
    broken.write_text('{"model_type": "llama", "hidden_size": 64}')
    with pytest.raises(ConfigError, match="field 'num_attention_heads' missing"):
        ModelSpec.from_pretrained(broken.parent)


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    from hwkit.cli import main

    monkeypatch.setattr(sys, "argv", ["hwkit", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_plan_json_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(
        [
            "plan",
            "dpo",
            "--model",
            "llama-3.1-8b",
            "--seq-len",
            "1024",
            "--effective-batch",
            "8",
            "--profile",
            "h200",
            "--json",
        ],
        monkeypatch,
        capsys,
    )
    data = json.loads(out)
    assert code == 0 and data["profile"] == "h200" and data["present"] is False
    assert data["estimate"]["total"] <= data["budget"] and data["effective_batch"] == 8
    code, out, _ = run_cli(
        ["plan", "sft", "-m", "smollm2-135m", "--profile", "t4"], monkeypatch, capsys
    )
    assert code == 0 and "NOT PRESENT" in out and "float16" in out and "logits" in out
    cases = [
        (["plan", "sft", "-m", str(tmp_path)], 4, "has no config.json"),
        (["plan", "sft", "-m", "smollm2-135m", "--seq-len", "9000"], 2, "limit of 8192"),
        (["plan", "sft", "-m", "smollm2-135m", "--effective-batch", "0"], 2, "effective batch 0"),
        (["plan", "train", "-m", "smollm2-135m"], 2, "job kind 'train' unknown"),
        (["plan", "full", "-m", "llama-3.1-8b", "--profile", "t4"], 5, "nearest plan"),
    ]
    for args, want_code, text in cases:
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == want_code, (args, err)
        assert text in err and err.count("\n") == 1, err


def test_lora_dropout_counts_each_adapted_inputs_copy_and_mask() -> None:
    """With dropout every LoRA branch keeps a dropped-out copy of its projection's input
    and a one-byte mask (docs/allocator.md, "LoRA dropout"); full training has no adapters."""
    settings = Settings("float32", "none", 2, False)
    plain = Job("sft", SMOL, seq_len=128, effective_batch=2, lora_rank=8)
    dropped = Job("sft", SMOL, seq_len=128, effective_batch=2, lora_rank=8, lora_dropout=True)
    per_token = SMOL.lora_input_elems() * (4 + 1)  # float32 copy + mask
    extra = estimate(dropped, settings).activations - estimate(plain, settings).activations
    assert extra == SMOL.num_layers * per_token * 2 * 128
    assert SMOL.lora_input_elems() == 3 * 576 + 576 + 2 * 576 + 1536  # qkv, o, gate+up, down
    full = Job("full", SMOL, seq_len=128, effective_batch=2, lora_dropout=True)
    assert estimate(full, settings) == estimate(
        dataclasses.replace(full, lora_dropout=False), settings
    )
