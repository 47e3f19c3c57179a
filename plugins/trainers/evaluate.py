"""``hwkit eval RUN_DIR``: held-out loss and perplexity, before/after samples, JSON checks.

The run directory says everything needed: ``report.json`` (trainer, base model directory),
``config.toml`` (eval settings, sequence length) and ``validation.jsonl`` (the held-out
rows the run never trained on). For a LoRA run the "before" numbers come from the same
network with the adapter disabled, so no second model is loaded. A ``grpo`` run with
``[[reward]]`` tables also gets its held-out reward (``eval_reward``, ``eval_reward/KEY``),
measured as the trainer measures it: greedy completions of the validation prompts, scored
by the run's rewards fitted on its training prompts.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomllib

from hwkit import atomic, rundir
from hwkit.errors import ConfigError, NotFoundError
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.jobs import Placement
    from hwkit.plugins.rewards.composite import CompositeReward
    from hwkit.plugins.trainers.grpo import GRPOConfig
    from hwkit.runtime import Runtime

log = get_logger("hwkit.eval")

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, config) of a finished run; one-line errors when it is not one."""
    report_path, config_path = run_dir / rundir.REPORT, run_dir / rundir.CONFIG
    if not run_dir.is_dir():
        raise NotFoundError(f"run directory {str(run_dir)!r} does not exist")
    if not report_path.is_file() or not config_path.is_file():
        raise NotFoundError(
            f"{run_dir} is not a finished hwkit run (no report.json / config.toml)",
            hint="train first with hwkit train, or resume it with --resume",
        )
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{run_dir}: unreadable run files: {exc}") from None
    return report, config


def evaluate_run(
    run_dir: Path,
    *,
    samples: int | None = None,
    max_new_tokens: int | None = None,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """Evaluate a run directory and write ``eval.json`` there (atomically).

    The model runs where a ``generate`` plan for it puts it (device and dtype; the process's
    runtime unless ``runtime`` is given), with the transformers runtime's loader, since
    the losses need the adapter switched off and on in one network.
    """
    import torch

    run_dir = Path(run_dir).absolute()
    report, config = load_run(run_dir)
    settings = dict(config.get("eval", {}))
    n_samples = samples if samples is not None else int(settings.get("samples", 3))
    new_tokens = max_new_tokens or int(settings.get("max_new_tokens", 64))
    max_rows = int(settings.get("max_rows", 64))
    seq_len = int(config.get("max_seq_len", 512))
    validation = rundir.read_jsonl(run_dir / rundir.VALIDATION_DATA)[:max_rows]
    # before the model loads, so a reward no longer registered fails at once
    rewards = grpo_rewards(run_dir, report, config)
    with rewards.composite if rewards is not None else contextlib.nullcontext():
        reward_tokens = 0
        if rewards is not None:
            reward_tokens = max_new_tokens or rewards.config.max_completion_length
        placement = _placement(run_dir, report, seq_len + max(new_tokens, reward_tokens), runtime)
        model, tokenizer, is_adapter = load_trained(run_dir, report, placement)
        model.eval()
        before = _adapter_off(model) if is_adapter else None
        kind = "preference" if validation and "chosen" in validation[0] else "sft"
        metrics: dict[str, Any] = {"validation_rows": len(validation)}
        with torch.no_grad():
            if kind == "sft" and validation:
                only = bool(config.get("completion_only_loss", False))
                loss = sft_loss(model, tokenizer, validation, seq_len, completion_only=only)
                metrics.update(eval_loss=loss, perplexity=math.exp(min(loss, 50)))
                if before is not None:
                    with before():
                        base = sft_loss(model, tokenizer, validation, seq_len, completion_only=only)
                    metrics.update(base_eval_loss=base, base_perplexity=math.exp(min(base, 50)))
            elif kind == "preference" and validation and before is not None:
                beta = float(config.get("beta", 0.1))
                metrics.update(
                    preference_metrics(model, tokenizer, validation, seq_len, beta, before)
                )
            if rewards is not None:
                metrics.update(rewards.measure(model, tokenizer, reward_tokens))
                if before is not None:
                    with before():
                        base_reward = rewards.measure(model, tokenizer, reward_tokens)
                    metrics.update({f"base_{k}": v for k, v in base_reward.items()})
            prompts = _prompts(settings.get("prompts") or [], validation, n_samples)
            generated = []
            for messages, reference in prompts:
                after = generate(model, tokenizer, messages, new_tokens)
                item: dict[str, Any] = {"prompt": messages[-1]["content"], "after": after}
                if before is not None:
                    with before():
                        item["before"] = generate(model, tokenizer, messages, new_tokens)
                if reference is not None:
                    item["reference"] = reference
                generated.append(item)
    field = settings.get("json_score_field")
    if field:
        metrics.update(json_metrics(generated, field))
    result = {
        "run_dir": str(run_dir),
        "trainer": report.get("trainer"),
        "base_model_dir": report.get("base_model_dir"),
        "device": placement.plan.device,
        "dtype": placement.plan.dtype,
        "metrics": metrics,
        "samples": generated,
    }
    atomic.write_json_atomic(run_dir / rundir.EVAL, result)
    log.info("eval.done", run=str(run_dir), **{k: v for k, v in metrics.items()})
    return result


@dataclass
class GRPORewards:
    """A grpo run's held-out prompt rows and its composite reward, fitted as in training."""

    config: GRPOConfig
    rows: list[dict[str, Any]]
    composite: CompositeReward

    def measure(self, model: Any, tokenizer: Any, max_new_tokens: int) -> dict[str, float]:
        """``eval_reward`` and ``eval_reward/KEY`` of ``model`` (greedy) on the rows."""
        from hwkit.plugins.trainers.heldout_reward import held_out_reward

        out = held_out_reward(
            model, tokenizer, self.rows, self.composite, max_new_tokens=max_new_tokens
        )
        return {k: v for k, v in out.items() if k.startswith("eval_reward")}


def grpo_rewards(
    run_dir: Path, report: dict[str, Any], config: dict[str, Any]
) -> GRPORewards | None:
    """For a ``grpo`` run with rewards, the held-out rows and the composite the trainer
    used: the run's own rows (``train.jsonl``, ``validation.jsonl``) through the trainer's
    ``prepare`` (as on resume: too long prompts dropped, nothing written) and its datasets,
    the composite built and fitted on the training prompts by the trainer itself. None for
    any other run; a reward no longer registered is the registry's ConfigError."""
    from hwkit.plugins.trainers.grpo import GRPOConfig, GRPOTrainerPlugin

    if report.get("trainer") != GRPOTrainerPlugin.name or not config.get("reward"):
        return None
    if not (run_dir / rundir.TRAIN_DATA).is_file():
        raise NotFoundError(
            f"{run_dir} holds no {rundir.TRAIN_DATA}: the rewards fit on the training rows"
        )
    from hwkit.plugins.trainers.config import validate_config

    cfg = validate_config(GRPOConfig, config, where=str(run_dir / rundir.CONFIG))
    trainer = GRPOTrainerPlugin(cfg)
    data = trainer.prepare(cfg, run_dir, resume=True)
    trainer._datasets(data.train, data.eval)
    return GRPORewards(cfg, trainer.held_rows, trainer.composite_reward())


def _base_dir(run_dir: Path, report: dict[str, Any]) -> str:
    """The directory holding the run's base weights (the run itself for a full model)."""
    if not (run_dir / "adapter_config.json").is_file():
        return str(run_dir)
    base_dir = report.get("base_model_dir")
    if not base_dir or not Path(base_dir).is_dir():
        from hwkit.models import resolve_model

        base_dir = str(resolve_model(report.get("model", "")))
    return str(base_dir)


def _placement(
    run_dir: Path, report: dict[str, Any], context: int, runtime: Runtime | None
) -> Placement:
    """Where evaluation runs: a one-sequence ``generate`` plan for the run's model."""
    from hwkit import jobs
    from hwkit.allocator import Job, ModelSpec

    if not (run_dir / "adapter_config.json").is_file() and not (run_dir / "config.json").is_file():
        raise NotFoundError(f"{run_dir} holds no adapter_config.json or config.json weights")
    spec = ModelSpec.from_pretrained(_base_dir(run_dir, report))
    job = Job(
        "generate",
        spec,
        seq_len=min(context, spec.max_positions),
        effective_batch=1,
        runtimes=("transformers",),
    )
    return jobs.place(job, runtime)


def load_trained(
    run_dir: Path, report: dict[str, Any], placement: Placement | None = None
) -> tuple[Any, Any, bool]:
    """(model, tokenizer, is_adapter): the base with the run's adapter, or the full model,
    in the plan's dtype on its device (float32 where the caller gives no placement)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, placement.plan.dtype) if placement else torch.float32

    def placed(model: Any) -> Any:
        return placement.device.place(model) if placement else model

    tokenizer = AutoTokenizer.from_pretrained(str(run_dir), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if (run_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(
            _base_dir(run_dir, report), local_files_only=True, dtype=dtype
        )
        return placed(PeftModel.from_pretrained(base, str(run_dir))), tokenizer, True
    if (run_dir / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(
            str(run_dir), local_files_only=True, dtype=dtype
        )
        return placed(model), tokenizer, False
    raise NotFoundError(f"{run_dir} holds no adapter_config.json or config.json weights")


def _adapter_off(model: Any) -> Any:
    def ctx() -> contextlib.AbstractContextManager[Any]:
        return model.disable_adapter()

    return ctx


def _encode(tokenizer: Any, messages: list[dict[str, str]], seq_len: int, **kw: Any) -> Any:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt", **kw
    )
    return out["input_ids"][:, :seq_len]


def sft_loss(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    seq_len: int,
    *,
    completion_only: bool = False,
) -> float:
    """Token-weighted mean cross-entropy as SFT trained it: over whole conversations, or
    with ``completion_only`` over the last assistant reply only."""
    from hwkit.plugins.trainers.sft import split_last_reply

    total, count = 0.0, 0
    for row in rows:
        ids = _encode(tokenizer, row["messages"], seq_len).to(model.device)
        labels = ids.clone()
        if completion_only:
            prompt, _ = split_last_reply(row["messages"])
            start = _encode(tokenizer, prompt, seq_len, add_generation_prompt=True).shape[1]
            labels[:, :start] = -100
        n = int((labels[:, 1:] != -100).sum())
        if n < 1:
            continue
        out = model(input_ids=ids, labels=labels)
        total += float(out.loss) * n
        count += n
    return total / max(count, 1)


def completion_logp(
    model: Any,
    tokenizer: Any,
    prompt: list[dict[str, str]],
    completion: list[dict[str, str]],
    seq_len: int,
) -> float:
    """Summed log-probability of the completion's tokens after the prompt."""
    import torch

    prompt_ids = _encode(tokenizer, prompt, seq_len, add_generation_prompt=True)
    full_ids = _encode(tokenizer, prompt + completion, seq_len).to(model.device)
    start = min(prompt_ids.shape[1], full_ids.shape[1] - 1)
    logits = model(input_ids=full_ids).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1)
    targets = full_ids[:, 1:]
    token_logps = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return float(token_logps[:, start - 1 :].sum()) if start > 0 else float(token_logps.sum())


def preference_metrics(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], seq_len: int, beta: float, before: Any
) -> dict[str, float]:
    """DPO's implicit reward on held-out pairs: accuracy, margin and loss."""
    margins = []
    for row in rows:
        pol = [
            completion_logp(model, tokenizer, row["prompt"], row[k], seq_len)
            for k in ("chosen", "rejected")
        ]
        with before():
            ref = [
                completion_logp(model, tokenizer, row["prompt"], row[k], seq_len)
                for k in ("chosen", "rejected")
            ]
        margins.append(beta * ((pol[0] - ref[0]) - (pol[1] - ref[1])))
    if not margins:
        return {}
    losses = [math.log1p(math.exp(-m)) if m > -30 else -m for m in margins]
    return {
        "reward_accuracy": sum(m > 0 for m in margins) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "dpo_loss": sum(losses) / len(losses),
    }


def generate(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int
) -> str:
    """Greedy decoding, so before/after differ only by the weights."""
    ids = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    ).to(model.device)
    out = model.generate(
        **ids,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=1.2,
        pad_token_id=tokenizer.pad_token_id,
    )
    text: str = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    return text.strip()


def _prompts(
    fixed: list[str], validation: list[dict[str, Any]], n: int
) -> Iterator[tuple[list[dict[str, str]], str | None]]:
    for text in fixed:
        yield [{"role": "user", "content": text}], None
    for row in validation[: max(0, n)]:
        if "messages" in row:
            msgs = row["messages"]
            last_user = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            reference = msgs[last_user + 1]["content"] if last_user + 1 < len(msgs) else None
            yield msgs[: last_user + 1], reference
        elif "prompt" in row:
            yield row["prompt"], row["chosen"][-1]["content"]


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a generation, or None."""
    match = _JSON_OBJECT.search(text)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def json_metrics(samples: list[dict[str, Any]], field: str) -> dict[str, float | int | None]:
    """JSON validity rate and Pearson/Spearman of ``field`` against the references'."""
    from scipy import stats

    valid, pairs = 0, []
    for sample in samples:
        parsed = parse_json_object(sample["after"])
        if parsed is None:
            continue
        valid += 1
        ref = parse_json_object(sample.get("reference") or "")
        try:
            pairs.append((float(parsed[field]), float(ref[field])))  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            continue
    out: dict[str, float | int | None] = {
        "json_valid_rate": valid / len(samples) if samples else 0.0,
        "json_scored": len(pairs),
        "pearson": None,
        "spearman": None,
    }
    if len(pairs) >= 3 and len({p for p, _ in pairs}) > 1 and len({r for _, r in pairs}) > 1:
        xs, ys = zip(*pairs, strict=True)
        out["pearson"] = float(stats.pearsonr(xs, ys).statistic)
        out["spearman"] = float(stats.spearmanr(xs, ys).statistic)
    return out
