"""Training throughput: ``hwkit train sft`` vs a plain trl ``SFTTrainer`` (default settings),
same model, same Alpaca examples, same machine, in one run.

Tokens are counted the same way for both: non-padding tokens fed to training steps
(attention-mask sum; packed rows carry no padding). Time is HF's ``train_runtime``.

A second baseline, plain trl with float32 and no gradient checkpointing (what a user who
knows their CPU would set by hand), shows how much of the gain is the dtype choice and how
much is packing and batching. Where the plan chooses bfloat16 (a CPU with AVX512-BF16 or
AMX), a third, plain trl in bf16 without checkpointing, measures that choice alone against
the float32 one.

    python bench/train_throughput.py --examples 16 --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HWKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_rows(n: int) -> list[dict[str, Any]]:
    """The first ``n`` Alpaca examples as chat messages, through hwkit's data pipeline."""
    from hwkit.plugins.data import DataConfig, prepare

    cfg = DataConfig(
        source=str(SHARED / "sft" / "alpaca_1k.json"), validation_fraction=0.0, dedupe="none"
    )
    rows = prepare(cfg).train
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} rows available, asked for {n}")
    return rows[:n]


def run_hwkit(rows: list[dict[str, Any]], seq_len: int, batch: int, out: Path) -> dict[str, Any]:
    from hwkit.jobs import place
    from hwkit.plugins.trainers.config import SFTConfig
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin
    from hwkit.runtime import current
    from hwkit.trainer import TrainingData

    runtime = current()
    config = SFTConfig(
        output_dir=out,
        max_seq_len=seq_len,
        effective_batch=batch,
        epochs=1,
        save_steps=10_000,
        lora_rank=8,
    )
    # The job flow's phases, with the bench's own rows in place of ``prepare``.
    config = SFTTrainerPlugin().resolve(config, runtime.active_profile.profile)
    trainer = SFTTrainerPlugin(config)
    placement = place(trainer.job(config, TrainingData(rows)), runtime, device=config.device)
    the_plan = placement.plan
    result = trainer.fit(rows, plan=the_plan, device=placement.device, output_dir=out)
    report = json.loads((out / "report.json").read_text())
    runtime_s = float(report["train"]["train_runtime"])
    return {
        "tokens": report["tokens"],
        "seconds": runtime_s,
        "tokens_per_s": report["tokens"] / runtime_s,
        "steps": result.steps,
        "micro_batch": the_plan.micro_batch,
        "grad_accum": the_plan.grad_accum,
        "packing": True,
        "dtype": the_plan.dtype,
        "gradient_checkpointing": the_plan.gradient_checkpointing,
    }


def run_plain_trl(
    rows: list[dict[str, Any]], seq_len: int, out: Path, **overrides: Any
) -> dict[str, Any]:
    """trl's ``SFTTrainer`` with its defaults, except for ``overrides`` (SFTConfig fields)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from hwkit.models import resolve_model

    model_dir = str(resolve_model("smollm2-135m-instruct"))
    counted = {"tokens": 0}

    class Counting(SFTTrainer):
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any) -> Any:
            mask = inputs.get("attention_mask")
            ids = inputs["input_ids"]
            counted["tokens"] += int(mask.sum()) if mask is not None else int(ids.numel())
            return super().training_step(model, inputs, *args)

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    args = SFTConfig(
        output_dir=str(out),
        max_length=seq_len,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **overrides,
    )
    trainer = Counting(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    result = trainer.train()
    seconds = float(result.metrics["train_runtime"])
    return {
        "tokens": counted["tokens"],
        "seconds": seconds,
        "tokens_per_s": counted["tokens"] / seconds,
        "steps": int(trainer.state.global_step),
        "micro_batch": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "packing": bool(args.packing),
        "dtype": "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32",
        "gradient_checkpointing": bool(args.gradient_checkpointing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="hwkit's effective batch")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    opts = parser.parse_args()

    import torch

    rows = load_rows(opts.examples)
    with tempfile.TemporaryDirectory() as tmp:
        plain = run_plain_trl(rows, opts.seq_len, Path(tmp) / "trl")
        tuned = run_plain_trl(
            rows, opts.seq_len, Path(tmp) / "trl-fp32", bf16=False, gradient_checkpointing=False
        )
        ours = run_hwkit(rows, opts.seq_len, opts.batch, Path(tmp) / "hwkit")
        native = None
        if ours["dtype"] == "bfloat16":  # the plan's choice, checked against float32 alone
            native = run_plain_trl(
                rows, opts.seq_len, Path(tmp) / "trl-bf16", bf16=True, gradient_checkpointing=False
            )
    ratio = ours["tokens_per_s"] / plain["tokens_per_s"]
    ratio_tuned = ours["tokens_per_s"] / tuned["tokens_per_s"]
    from hwkit.backends.cpu import cpu_flags, isa_level

    machine = (
        f"{platform.processor() or platform.machine()} ({isa_level(cpu_flags())}), "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"machine: {machine}")
    print(f"examples: {opts.examples} Alpaca rows, max length {opts.seq_len}, 1 epoch, LoRA r=8")
    cols = ("tokens", "seconds", "tokens/s", "steps", "micro", "accum", "dtype", "ckpt", "packing")
    print(f"{'':16} " + " ".join(f"{c:>9}" for c in cols))
    runs = [("plain trl", plain), ("plain trl fp32", tuned), ("hwkit", ours)]
    if native is not None:
        runs.insert(2, ("plain trl bf16", native))
    for name, r in runs:
        print(
            f"{name:16} {r['tokens']:>9} {r['seconds']:>9.1f} {r['tokens_per_s']:>9.1f} "
            f"{r['steps']:>9} {r['micro_batch']:>9} {r['grad_accum']:>9} {r['dtype']:>9} "
            f"{r['gradient_checkpointing']!s:>9} {r['packing']!s:>9}"
        )
    print(f"ratio hwkit / plain trl (defaults): {ratio:.2f}x")
    print(f"ratio hwkit / plain trl (fp32, no checkpointing): {ratio_tuned:.2f}x")
    if native is not None:
        dtype_ratio = native["tokens_per_s"] / tuned["tokens_per_s"]
        print(
            f"ratio plain trl bf16 / fp32 (no checkpointing; the dtype alone): {dtype_ratio:.2f}x"
        )
    if opts.json:
        summary = {
            "machine": machine,
            "plain_trl": plain,
            "plain_trl_fp32": tuned,
            "hwkit": ours,
            "plain_trl_bf16": native,
            "ratio": ratio,
            "ratio_fp32": ratio_tuned,
        }
        opts.json.write_text(json.dumps({**summary, "args": vars(opts)}, default=str, indent=2))


if __name__ == "__main__":
    main()
