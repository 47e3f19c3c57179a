"""Embedder fine-tuning: in-batch negatives (InfoNCE) over (query, positive) pairs.

The Plan gives the contrastive batch (``effective_batch``: every query is scored against
every positive in it), the micro-batch (how many rows go through the encoder at once),
dtype and checkpointing. When the micro-batch is smaller than the batch, the loss is
computed with gradient caching (Gao et al., 2021, as sentence-transformers'
CachedMultipleNegativesRankingLoss does): embed the whole batch without gradients,
take the loss's gradient with respect to the embeddings, then re-run each chunk with
gradients and back-propagate that cached gradient. The negatives are the full batch's,
whatever the memory allows, so shrinking the micro-batch never changes what is learned.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from hwkit.errors import ConfigError, UnavailableError
from hwkit.log import get_logger
from hwkit.plugins.trainers.embedder.pairs import Pair, load_pairs
from hwkit.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    import torch

    from hwkit.device import Device
    from hwkit.plan import Plan
    from hwkit.runtime import Runtime

log = get_logger(__name__)

CHECKPOINTS = "checkpoints"
FINAL = "model"


class EmbedderTrainConfig(BaseModel):
    """``hwkit train embedder CONFIG``: what to adapt, on which pairs, how."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="local model directory; None: all-MiniLM-L6-v2")
    data: Path | None = Field(None, description="JSONL of {query, positive} or a BEIR directory")
    split: str = Field("train", description="qrels split when data is a BEIR directory")
    eval_data: Path | None = Field(None, description="pairs to report the contrastive loss on")
    eval_split: str = "test"
    output_dir: Path = Path("runs/embedder")
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(32, ge=2, description="pairs per step = in-batch negatives + 1")
    micro_batch: int | None = Field(None, ge=1, description="None: the allocator's choice")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature (1/scale)")
    max_seq_len: int = Field(256, ge=8, description="document tokens")
    query_max_len: int = Field(64, ge=4, description="query tokens")
    symmetric: bool = Field(False, description="also score each document against all queries")
    seed: int = 42
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_pairs: int | None = Field(None, ge=2)
    device: str | None = Field(None, description="device id, e.g. cuda:0; None: the allocator's")
    query_prefix: str | None = None
    document_prefix: str | None = None


# -- loss ---------------------------------------------------------------------------------
def false_negative_mask(pairs: Sequence[Pair], positives_of: dict[str, set[str]]) -> torch.Tensor:
    """True where column j's document is also relevant to row i's query (j != i)."""
    import torch

    n = len(pairs)
    mask = torch.zeros((n, n), dtype=torch.bool)
    for i, pi in enumerate(pairs):
        relevant = positives_of.get(pi.query_key, set())
        for j, pj in enumerate(pairs):
            if j != i and (pj.positive_key in relevant or pj.positive_key == pi.positive_key):
                mask[i, j] = True
    return mask


def info_nce(
    queries: torch.Tensor,
    documents: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    *,
    symmetric: bool = False,
) -> torch.Tensor:
    """Cross-entropy of each query against all documents of the batch; row i's positive is i."""
    import torch
    import torch.nn.functional as F

    scores = (queries @ documents.T) / temperature
    scores = scores.masked_fill(mask.to(scores.device), float("-inf"))
    labels = torch.arange(scores.shape[0], device=scores.device)
    loss = F.cross_entropy(scores, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, labels)) / 2
    return loss


# -- the trainer ----------------------------------------------------------------------------
class EmbedderTrainer(Trainer):
    """Adapts a sentence embedder to a domain from (query, relevant document) pairs."""

    name: ClassVar[str] = "embedder"
    config_model: ClassVar[type[BaseModel]] = EmbedderTrainConfig

    def __init__(self, config: EmbedderTrainConfig | None = None) -> None:
        self.config = config or EmbedderTrainConfig()
        self.oom_retries = 0
        self.decisions: list[dict[str, Any]] = []

    # -- run: config -> data -> plan -> fit ------------------------------------------------
    def job(self, model_dir: Path, micro_batch: int | None = None) -> Any:
        """The allocator job for this config."""
        from hwkit.allocator import Job, ModelSpec

        cfg = self.config
        return Job(
            kind="embedder-train",
            model=ModelSpec.from_pretrained(str(model_dir)),
            seq_len=cfg.max_seq_len,
            effective_batch=cfg.batch_size,
            lora_rank=None,
            quantization="none",
            micro_batch=micro_batch if micro_batch is not None else cfg.micro_batch,
        )

    def run(self, config: BaseModel, *, runtime: Runtime, resume: bool = False) -> TrainResult:
        from hwkit.allocator import plan as make_plan
        from hwkit.plugins.embedders.model_config import resolve_model_path

        cfg = EmbedderTrainConfig.model_validate(config.model_dump())
        self.config = cfg
        if cfg.data is None:
            raise ConfigError(
                "embedder training needs `data`", hint="a JSONL of pairs or a BEIR dir"
            )
        model_dir = resolve_model_path(cfg.model)
        devices = [runtime.device(cfg.device)] if cfg.device else None
        plan = make_plan(self.job(model_dir), devices=devices, runtime=runtime)
        if not plan.present:
            raise UnavailableError(
                f"the plan is for {plan.device_name or plan.device} (profile {plan.profile}), "
                "which is not in this machine",
                hint="unset HWKIT_PROFILE to train on the hardware you have",
            )
        device = runtime.device(plan.device)
        out = Path(cfg.output_dir)
        train = load_pairs(
            cfg.data, split=cfg.split, rejects_path=out / "rejects.jsonl", limit=cfg.max_pairs
        )
        eval_pairs = None
        if cfg.eval_data is not None:
            eval_pairs = load_pairs(
                cfg.eval_data, split=cfg.eval_split, rejects_path=out / "eval_rejects.jsonl"
            )
        return self.fit(
            train, plan=plan, device=device, output_dir=out, eval_data=eval_pairs, resume=resume
        )

    # -- fit ----------------------------------------------------------------------------------
    def fit(
        self,
        train: Any,
        *,
        plan: Plan,
        device: Device,
        output_dir: Path,
        eval_data: Any | None = None,
        resume: bool = False,
    ) -> TrainResult:
        import numpy as np
        import torch
        from transformers import AutoTokenizer, get_linear_schedule_with_warmup

        from hwkit.plugins.embedders.model_config import read_model_config, resolve_model_path
        from hwkit.plugins.embedders.pooling import load_encoder

        cfg = self.config
        pairs: list[Pair] = list(train)
        batch = min(plan.effective_batch, len(pairs))
        if batch < 2:
            raise ConfigError(
                f"embedder training needs at least 2 pairs per batch, got {len(pairs)} pair(s)",
                hint="in-batch negatives need other pairs in the batch",
            )
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        model_dir = resolve_model_path(cfg.model)
        model_cfg = read_model_config(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        encoder = load_encoder(model_dir, model_cfg.pooling)
        encoder.model.train()
        if plan.gradient_checkpointing:
            encoder.model.gradient_checkpointing_enable()
        encoder = device.place(encoder)
        params = [p for p in encoder.parameters() if p.requires_grad]
        decay = [p for n, p in encoder.named_parameters() if p.requires_grad and not _no_decay(n)]
        no_decay = [p for n, p in encoder.named_parameters() if p.requires_grad and _no_decay(n)]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.learning_rate,
        )
        steps_per_epoch = max(1, len(pairs) // batch)
        total = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        warmup = int(total * cfg.warmup_ratio)
        positives_of: dict[str, set[str]] = {}
        for p in pairs:
            positives_of.setdefault(p.query_key, set()).add(p.positive_key)

        step, history = 0, []
        if resume:
            loaded = self._load_checkpoint(output_dir, encoder, optimizer)
            if loaded is not None:
                step, history = loaded["step"], loaded["losses"]
                log.info("resumed embedder training", step=step, of=total, dir=str(output_dir))
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total, last_epoch=step - 1)

        def batch_at(s: int) -> list[Pair]:
            epoch, k = divmod(s, steps_per_epoch)
            order = np.random.default_rng(cfg.seed + epoch).permutation(len(pairs))
            return [pairs[i] for i in order[k * batch : (k + 1) * batch]]

        eval_set = list(eval_data) if eval_data is not None else None
        metrics: dict[str, float] = {}
        if eval_set and step == 0:
            metrics["eval_loss_before"] = self.evaluate(encoder, tokenizer, eval_set, plan, device)

        from hwkit.allocator import MemoryGuard

        guard = MemoryGuard(device, micro_batch=min(plan.micro_batch, batch), grad_accum=1)
        chunk = min(plan.micro_batch, batch)
        started, seen_tokens = time.perf_counter(), 0
        torch.manual_seed(cfg.seed + step)
        with guard:
            while step < total:
                rows = batch_at(step)
                if guard.at_step_boundary():
                    chunk = min(chunk, guard.micro_batch)
                while True:
                    try:
                        optimizer.zero_grad(set_to_none=True)
                        loss, tokens = self._step(
                            encoder, tokenizer, rows, positives_of, chunk, plan, device
                        )
                        break
                    except Exception as exc:
                        if not device.is_oom(exc) or chunk <= 1:
                            raise
                        optimizer.zero_grad(set_to_none=True)
                        device.empty_cache()
                        self._record_oom(chunk, step, str(exc))
                        chunk = max(1, chunk // 2)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                seen_tokens += tokens
                history.append(round(loss, 6))
                log.info("embedder step", step=step, of=total, loss=round(loss, 4), chunk=chunk)
                if step % cfg.checkpoint_every == 0 or step == total:
                    self._save_checkpoint(output_dir, encoder, optimizer, step, history)
        elapsed = time.perf_counter() - started
        if eval_set:
            metrics["eval_loss_after"] = self.evaluate(encoder, tokenizer, eval_set, plan, device)
        metrics.update(
            {
                "steps": float(step),
                "train_loss_first": history[0] if history else math.nan,
                "train_loss_last": history[-1] if history else math.nan,
                "train_seconds": round(elapsed, 3),
                "tokens_per_second": round(seen_tokens / elapsed, 1) if elapsed > 0 else 0.0,
                "oom_retries": float(self.oom_retries),
            }
        )
        final = self.save_model(encoder, tokenizer, model_dir, output_dir / FINAL)
        _write_json(output_dir / "plan.json", json.loads(plan.model_dump_json()))
        _write_json(
            output_dir / "metrics.json",
            {"metrics": metrics, "losses": history, "decisions": self.decisions},
        )
        return TrainResult(
            output_dir=output_dir,
            steps=step,
            metrics=metrics,
            artifacts={
                "model": final,
                "plan": output_dir / "plan.json",
                "metrics": output_dir / "metrics.json",
            },
        )

    # -- one optimizer step ----------------------------------------------------------------------
    def _encode(
        self, encoder: Any, tokenizer: Any, texts: list[str], max_len: int, device: Device
    ) -> Any:
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        target = device.torch_device()
        inputs = {
            k: v.to(target)
            for k, v in enc.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        return encoder(**inputs), int(enc["attention_mask"].sum())

    def _texts(self, rows: Sequence[Pair]) -> tuple[list[str], list[str]]:
        qp = self.config.query_prefix or ""
        dp = self.config.document_prefix or ""
        return [qp + r.query for r in rows], [dp + r.positive for r in rows]

    def _step(
        self,
        encoder: Any,
        tokenizer: Any,
        rows: list[Pair],
        positives_of: dict[str, set[str]],
        chunk: int,
        plan: Plan,
        device: Device,
    ) -> tuple[float, int]:
        """Forward and backward for one contrastive batch; returns (loss, tokens)."""
        import torch

        cfg = self.config
        queries, docs = self._texts(rows)
        mask = false_negative_mask(rows, positives_of)
        q_len, d_len = cfg.query_max_len, plan.max_seq_len
        if chunk >= len(rows):  # everything fits: plain backward, no cache needed
            with device.autocast(plan.dtype):
                q, qt = self._encode(encoder, tokenizer, queries, q_len, device)
                d, dt = self._encode(encoder, tokenizer, docs, d_len, device)
            loss = info_nce(q.float(), d.float(), mask, cfg.temperature, symmetric=cfg.symmetric)
            loss.backward()
            return float(loss.detach()), qt + dt
        # Gradient cache: embeddings without graphs, loss gradient, then chunk-wise backward.
        spans = [(i, min(i + chunk, len(rows))) for i in range(0, len(rows), chunk)]
        states: list[tuple[Any, Any]] = []
        q_parts, d_parts, tokens = [], [], 0
        with torch.no_grad():
            for a, b in spans:
                states.append(_rng_state())
                with device.autocast(plan.dtype):
                    q, qt = self._encode(encoder, tokenizer, queries[a:b], q_len, device)
                    d, dt = self._encode(encoder, tokenizer, docs[a:b], d_len, device)
                q_parts.append(q.float())
                d_parts.append(d.float())
                tokens += qt + dt
        q_all = torch.cat(q_parts).requires_grad_()
        d_all = torch.cat(d_parts).requires_grad_()
        loss = info_nce(q_all, d_all, mask, cfg.temperature, symmetric=cfg.symmetric)
        loss.backward()
        assert q_all.grad is not None and d_all.grad is not None
        for (a, b), state in zip(spans, states, strict=True):
            with torch.random.fork_rng(devices=_rng_devices(device)):
                _set_rng_state(state)  # the same dropout masks as the cached pass
                with device.autocast(plan.dtype):
                    q, _ = self._encode(encoder, tokenizer, queries[a:b], q_len, device)
                    d, _ = self._encode(encoder, tokenizer, docs[a:b], d_len, device)
                surrogate = (q.float() * q_all.grad[a:b]).sum() + (
                    d.float() * d_all.grad[a:b]
                ).sum()
                surrogate.backward()
        return float(loss.detach()), tokens

    def _record_oom(self, chunk: int, step: int, detail: str) -> None:
        self.oom_retries += 1
        decision = {
            "time": time.time(),
            "reason": "oom",
            "step": step,
            "old_micro_batch": chunk,
            "new_micro_batch": max(1, chunk // 2),
            "detail": detail[:200],
        }
        self.decisions.append(decision)
        log.warning("out of memory: retrying the step with a smaller micro-batch", **decision)

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(
        self, encoder: Any, tokenizer: Any, pairs: Sequence[Pair], plan: Plan, device: Device
    ) -> float:
        """Mean in-batch InfoNCE loss over ``pairs`` in batches of the plan's size (no dropout)."""
        import torch

        cfg = self.config
        positives_of: dict[str, set[str]] = {}
        for p in pairs:
            positives_of.setdefault(p.query_key, set()).add(p.positive_key)
        batch = max(2, min(plan.effective_batch, len(pairs)))
        was_training = encoder.training
        encoder.eval()
        losses, weights = [], []
        with torch.no_grad():
            for i in range(0, len(pairs) - 1, batch):
                rows = list(pairs[i : i + batch])
                if len(rows) < 2:
                    continue
                queries, docs = self._texts(rows)
                q_parts, d_parts = [], []
                for a in range(0, len(rows), plan.micro_batch):
                    q, _ = self._encode(
                        encoder,
                        tokenizer,
                        queries[a : a + plan.micro_batch],
                        cfg.query_max_len,
                        device,
                    )
                    d, _ = self._encode(
                        encoder, tokenizer, docs[a : a + plan.micro_batch], plan.max_seq_len, device
                    )
                    q_parts.append(q.float())
                    d_parts.append(d.float())
                mask = false_negative_mask(rows, positives_of)
                loss = info_nce(torch.cat(q_parts), torch.cat(d_parts), mask, cfg.temperature)
                losses.append(float(loss) * len(rows))
                weights.append(len(rows))
        encoder.train(was_training)
        return sum(losses) / max(1, sum(weights))

    # -- checkpoints (safetensors + JSON only) -------------------------------------------------
    def _save_checkpoint(
        self, output_dir: Path, encoder: Any, optimizer: Any, step: int, history: list[float]
    ) -> Path:
        from safetensors.torch import save_file

        root = output_dir / CHECKPOINTS
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".step-{step:07d}-", dir=root))
        state = optimizer.state_dict()
        tensors: dict[str, Any] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in encoder.model.state_dict().items()},
            str(tmp / "model.safetensors"),
        )
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta = {"step": step, "losses": history, "param_groups": state["param_groups"]}
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        final = root / f"step-{step:07d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        kept = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in kept[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint saved", step=step, path=str(final))
        return final

    def _load_checkpoint(
        self, output_dir: Path, encoder: Any, optimizer: Any
    ) -> dict[str, Any] | None:
        from safetensors.torch import load_file

        root = output_dir / CHECKPOINTS
        done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
        if not done:
            log.info("no checkpoint to resume from; starting at step 0", dir=str(root))
            return None
        latest = done[-1]
        meta = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        encoder.model.load_state_dict(load_file(str(latest / "model.safetensors")))
        flat = load_file(str(latest / "optimizer.safetensors"))
        state: dict[int, dict[str, Any]] = {}
        for key, value in flat.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return {"step": int(meta["step"]), "losses": list(meta["losses"])}

    # -- the artifact -------------------------------------------------------------------------
    def save_model(self, encoder: Any, tokenizer: Any, source: Path, target: Path) -> Path:
        """Write a sentence-transformers directory (safetensors) atomically at ``target``."""
        from hwkit.plugins.embedders.model_config import read_model_config

        source_cfg = read_model_config(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            encoder.model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            modules = [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
            _write_json(tmp / "modules.json", modules)
            dim = int(encoder.model.config.hidden_size)
            pooling = {
                "word_embedding_dimension": dim,
                "pooling_mode_cls_token": source_cfg.pooling == "cls",
                "pooling_mode_mean_tokens": source_cfg.pooling == "mean",
                "pooling_mode_max_tokens": source_cfg.pooling == "max",
                "pooling_mode_mean_sqrt_len_tokens": source_cfg.pooling == "mean_sqrt_len",
                "pooling_mode_lasttoken": source_cfg.pooling == "lasttoken",
            }
            _write_json(tmp / "1_Pooling" / "config.json", pooling)
            (tmp / "2_Normalize").mkdir(exist_ok=True)
            _write_json(
                tmp / "sentence_bert_config.json",
                {
                    "max_seq_length": self.config.max_seq_len,
                    "do_lower_case": source_cfg.do_lower_case,
                },
            )
            prompts = dict(source_cfg.prompts)
            if self.config.query_prefix is not None:
                prompts["query"] = self.config.query_prefix
            if self.config.document_prefix is not None:
                prompts["document"] = self.config.document_prefix
            _write_json(
                tmp / "config_sentence_transformers.json",
                {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
            )
            old = None
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("saved fine-tuned embedder", path=str(target))
        return target


def _no_decay(name: str) -> bool:
    """Biases and normalisation weights get no weight decay (the usual BERT recipe)."""
    return name.endswith(".bias") or "norm" in name.lower()


def _rng_devices(device: Device) -> list[Any]:
    target = device.torch_device()
    if target is not None and target.type == "cuda":
        return [target.index or 0]
    return []


def _rng_state() -> tuple[Any, Any]:
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Any, Any]) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)
