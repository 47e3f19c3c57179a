"""Is a GRPO run's held-out gain beyond noise? Per-prompt rewards, paired with the base.

``report.json`` holds the mean held-out reward before and after; on a few prompts a change
of the mean can be a handful of prompts moving. This decodes each held-out prompt greedily
with the run's base (adapter off) and with each run (adapter on), scores them with the
run's own composite reward (``hwkit eval``'s rows and rewards), and prints per run: the
mean reward, the mean paired difference against the base with its standard error, and how
many prompts got better, worse or stayed the same.

    python bench/grpo_paired.py RUN [RUN ...] [--json out.json]

The runs must share their base model and held-out rows (e.g. bench/grpo_scorer.py runs
with other ``--steps``); the base is decoded once, with the first run's model.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

EPS = 1e-9


def per_prompt(run_dir: Path, base: bool) -> tuple[list[float], list[float] | None]:
    """(the run's per-prompt rewards, the base's when ``base``), greedy."""
    from hwkit.plugins.trainers.evaluate import grpo_rewards, load_run, load_trained
    from hwkit.plugins.trainers.grpo import text_of
    from hwkit.plugins.trainers.heldout_reward import generate

    report, config = load_run(run_dir)
    rewards = grpo_rewards(run_dir, report, config)
    if rewards is None:
        raise SystemExit(f"{run_dir}: not a GRPO run with rewards")
    model, tokenizer, is_adapter = load_trained(run_dir, report)
    rows = rewards.rows
    prompts = [text_of(r["prompt"]) for r in rows]
    columns = [{k: v for k, v in r.items() if k != "prompt"} for r in rows]
    tokens = rewards.config.max_completion_length

    def score() -> list[float]:
        completions = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens=tokens)
        values = rewards.composite.score_components(prompts, completions, columns)
        return [float(v) for v in rewards.composite.combine(values)]

    after = score()
    if not base:
        return after, None
    if not is_adapter:
        raise SystemExit(f"{run_dir}: a full fine-tune has no adapter to turn off for the base")
    with model.disable_adapter():
        return after, score()


def paired(run: list[float], base: list[float]) -> dict[str, Any]:
    diffs = [a - b for a, b in zip(run, base, strict=True)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {
        "prompts": len(diffs),
        "mean": statistics.mean(run),
        "base_mean": statistics.mean(base),
        "diff": statistics.mean(diffs),
        "se": se,
        "better": sum(d > EPS for d in diffs),
        "worse": sum(d < -EPS for d in diffs),
        "same": sum(abs(d) <= EPS for d in diffs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base: list[float] | None = None
    results: dict[str, Any] = {}
    for run_dir in args.runs:
        scores, first_base = per_prompt(run_dir, base is None)
        base = first_base if base is None else base
        assert base is not None
        if len(scores) != len(base):
            raise SystemExit(f"{run_dir}: {len(scores)} held-out prompts, the base had {len(base)}")
        results[str(run_dir)] = {**paired(scores, base), "rewards": scores}
    print(f"{'run':50} {'prompts':>7} {'base':>6} {'run':>6} {'diff':>7} {'se':>6}  +/-/=")
    for name, r in results.items():
        print(
            f"{name[-50:]:50} {r['prompts']:>7} {r['base_mean']:>6.3f} {r['mean']:>6.3f} "
            f"{r['diff']:>+7.3f} {r['se']:>6.3f}  {r['better']}/{r['worse']}/{r['same']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"base": base, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
