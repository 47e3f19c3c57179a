"""GRPO on the profile scorer: does a short run raise the held-out reward over the SFT model,
and how does hwkit's trainer compare with plain trl ``GRPOTrainer`` on the same work?

Both arms start from the same SFT scorer (a LoRA run merged into a full model), read the
same prompts (the scorer's instruction and a profile; the reference is the JSON answer the
SFT data holds), train a fresh LoRA (rank 16 on every linear layer) with the same rewards
(``json_valid`` 0.3 + ``numeric_closeness`` on ``score`` 0.7), group, completion length,
learning rate and steps. Each arm runs in its own process, one after the other, so each
has the 2 cores and its peak RSS is its own.

    hwkit arm: ``hwkit.jobs.train`` with the ``grpo`` trainer: the allocator's plan, the
        probe at the longest shapes, the memory guard, checkpoints, the held-out reward
        before and after (greedy, ``--held-out`` validation prompts).
    trl arm:   ``trl.GRPOTrainer`` as its docs show it, per_device_train_batch_size = the
        effective batch (trl's default of one generation round per step), the same LoRA.

Printed: minutes, completion tokens per second and all tokens per second (trl's own
``num_tokens`` count, prompt and completion), peak RSS, hwkit's estimate against its peak
RSS, and the held-out reward (total and per reward) of the SFT model and of the GRPO run.

    python bench/grpo_scorer.py --sft-run RUN [--steps 20] [--held-out 24] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MB = 1_000_000
REWARDS = [
    {"name": "json_valid", "weight": 0.3},
    {
        "name": "numeric_closeness",
        "weight": 0.7,
        "options": {"field": "score", "reference": "reference"},
    },
]


def merged_model(sft_run: Path, cache: Path) -> Path:
    """The SFT run's adapter merged into its base (made once, kept in ``cache``)."""
    out = cache / f"merged-{sft_run.resolve().name}-{int(sft_run.stat().st_mtime)}"
    if (out / "config.json").is_file():
        return out
    from hwkit.plugins.exporters import MergedExporter

    MergedExporter().export(sft_run, out)
    return out


def rows_file(sft_run: Path, prompts: int, held_out: int, out: Path) -> Path:
    """The last ``prompts`` rows of the SFT run's training rows and the first ``held_out``
    of its validation rows, in one JSONL file (the GRPO run splits it again)."""
    train = (sft_run / "train.jsonl").read_text(encoding="utf-8").splitlines()[-prompts:]
    held = (sft_run / "validation.jsonl").read_text(encoding="utf-8").splitlines()[:held_out]
    out.write_text("\n".join(train + held) + "\n", encoding="utf-8")
    return out


def completion_tokens(logs: list[dict[str, Any]], batch: int) -> float:
    """Completion tokens sampled: trl logs the mean length of each step's completions."""
    return sum(m["completions/mean_length"] * batch for m in logs if "completions/mean_length" in m)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the arms, each in its own process -----------------------------------------------------------
def arm_hwkit(args: argparse.Namespace) -> dict[str, Any]:
    from hwkit.jobs import train
    from hwkit.plugins.data import DataConfig
    from hwkit.plugins.trainers.grpo import GRPOConfig, GRPOTrainerPlugin

    out = Path(args.work) / "hwkit-run"
    config = GRPOConfig(
        model=str(args.model),
        output_dir=out,
        data=DataConfig(
            source=str(args.train_rows),
            validation_fraction=args.held_out / (args.prompts + args.held_out),
            thresholds={
                "min_answers": 1,
                "min_words_per_answer": 0,
                "min_categories": 0,
                "min_total_words": 0,
            },
        ),
        effective_batch=args.batch,
        num_generations=args.group,
        max_completion_length=args.completion,
        max_seq_len=512,
        lora_rank=16,
        learning_rate=args.lr,
        max_steps=args.steps,
        save_steps=max(1, args.steps),
        temperature=1.0,
        reward=REWARDS,
        eval={"max_rows": args.held_out},
    )
    plugin = GRPOTrainerPlugin()
    start = time.perf_counter()
    result = train(plugin, config)
    seconds = time.perf_counter() - start
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    total = max((m.get("num_tokens", 0.0) for m in metrics), default=0.0)
    completion = completion_tokens(metrics, args.batch)
    return {
        "arm": "hwkit",
        "steps": result.steps,
        "seconds": seconds,
        "train_seconds": report["train"].get("train_runtime"),
        "tokens": total,
        "completion_tokens": completion,
        "peak_rss": peak_rss(),
        "estimate": plan["estimate"],
        "plan": {
            k: plan[k]
            for k in ("dtype", "micro_batch", "grad_accum", "group_size", "generation_batch")
        },
        "before": {k: v for k, v in report["eval_before"].items() if k != "samples"},
        "after": {k: v for k, v in report["eval_after"].items() if k != "samples"},
        "samples_after": report["eval_after"].get("samples", []),
    }


def arm_trl(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from hwkit import rundir
    from hwkit.plugins.rewards.composite import build_rewards
    from hwkit.plugins.trainers.grpo import prompt_rows, trl_reward_funcs

    torch.manual_seed(42)
    # the rows the hwkit arm trained on (its split of the same file)
    rows = prompt_rows(rundir.read_jsonl(Path(args.work) / "hwkit-run" / rundir.TRAIN_DATA))
    funcs, weights = trl_reward_funcs(build_rewards(REWARDS))
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32)
    tuned = args.arm == "trl-tuned"
    # as trl's docs show it (its defaults: bf16 and gradient checkpointing, emulated bf16 on
    # a CPU without it), or hand-tuned as hwkit's plan runs it: no checkpointing, in the
    # plan's dtype (float32 on an AVX2 CPU; bf16 autocast where the CPU has native bf16)
    precision: dict[str, bool] = {}
    if tuned:
        plan = json.loads((Path(args.work) / "hwkit-run" / "plan.json").read_text())
        precision = {"bf16": plan["dtype"] == "bfloat16", "gradient_checkpointing": False}
    config = GRPOConfig(
        output_dir=str(Path(args.work) / f"{args.arm}-run"),
        **precision,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.completion,
        learning_rate=args.lr,
        max_steps=args.steps if tuned else min(args.steps, args.trl_default_steps),
        temperature=1.0,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=42,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=list(funcs),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    logs = trainer.state.log_history
    total = max((m.get("num_tokens", 0.0) for m in logs), default=0.0)
    completion = completion_tokens(logs, args.batch)
    return {
        "arm": args.arm,
        "dtype": "bfloat16" if config.bf16 else "float32",
        "steps": int(trainer.state.global_step),
        "seconds": seconds,
        "tokens": total,
        "completion_tokens": completion,
        "peak_rss": peak_rss(),
    }


# -- the driver ----------------------------------------------------------------------------------
def run_arm(name: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.work) / f"{name}.json"
    cmd = [sys.executable, __file__, "--arm", name, "--out-json", str(out)]
    for key in ("model", "train_rows", "work"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    for key in (
        "steps",
        "batch",
        "group",
        "completion",
        "prompts",
        "held_out",
        "lr",
        "trl_default_steps",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HWKIT_LOG_LEVEL="WARNING")
    subprocess.run(cmd, check=True, env=env)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sft-run", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="completions per step")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--completion", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--work", type=Path, default=Path(".cache/bench-grpo"))
    parser.add_argument(
        "--arms", default="hwkit,trl-tuned,trl", help="hwkit first: trl reads its split"
    )
    parser.add_argument(
        "--trl-default-steps",
        type=int,
        default=3,
        help="steps of the trl-defaults arm (emulated bf16 on CPU is slow; its rate is the figure)",
    )
    parser.add_argument("--json", type=Path)
    # internal: one arm in this process
    parser.add_argument("--arm")
    parser.add_argument("--out-json", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--train-rows", type=Path)
    args = parser.parse_args()

    if args.arm:
        import torch

        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        result = arm_hwkit(args) if args.arm == "hwkit" else arm_trl(args)
        args.out_json.write_text(json.dumps(result, indent=2))
        return

    if args.sft_run is None:
        parser.error("--sft-run is required")
    args.work.mkdir(parents=True, exist_ok=True)
    args.model = merged_model(args.sft_run, args.work)
    args.train_rows = rows_file(args.sft_run, args.prompts, args.held_out, args.work / "rows.jsonl")
    results = {name: run_arm(name, args) for name in args.arms.split(",")}
    print(
        f"GRPO, {args.steps} steps x {args.batch} completions ({args.group} per prompt, "
        f"<= {args.completion} tokens), SmolLM2-135M scorer from {args.sft_run}"
    )
    print(
        f"{'arm':9} {'dtype':>9} {'steps':>5} {'train min':>9} {'tok/s':>7} {'compl tok/s':>11} "
        f"{'peak RSS MB':>11}"
    )
    for name, r in results.items():
        secs = r.get("train_seconds") or r["seconds"]
        dtype = r.get("dtype") or r["plan"]["dtype"]
        print(
            f"{name:9} {dtype:>9} {r['steps']:5} {secs / 60:9.1f} {r['tokens'] / secs:7.1f} "
            f"{r['completion_tokens'] / secs:11.1f} {r['peak_rss'] / MB:11.0f}"
        )
    if "hwkit" in results:
        h = results["hwkit"]
        est = h["estimate"]
        total = sum(v for k, v in est.items() if isinstance(v, int))
        print(
            f"hwkit plan {h['plan']}: estimate {total / MB:.0f} MB vs peak RSS "
            f"{h['peak_rss'] / MB:.0f} MB ({(total - h['peak_rss']) / h['peak_rss']:+.1%})"
        )
        for phase in ("before", "after"):
            m = h[phase]
            parts = ", ".join(
                f"{k.split('/')[-1]} {v:.3f}" for k, v in m.items() if k.startswith("eval_reward/")
            )
            print(
                f"held-out reward {phase:6}: {m['eval_reward']:.3f} "
                f"({parts}; {m['eval_rows']} prompts)"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
