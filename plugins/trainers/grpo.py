"""The ``grpo`` trainer: reward-driven RL through trl's GRPOTrainer, with hwkit's rewards.

Each prompt is sampled ``num_generations`` times; the rewards of a group give each
completion its advantage, so no value model is needed, and with LoRA no reference copy
either (the adapter is switched off for the KL term). The allocator plans the sampling as
well as the update: the group, the completions sampled together and their KV cache at the
longest completion (``hwkit.allocator``). Two things keep a run that cannot fit from
failing late: the longest prompt is put first, and before step 1 a probe samples a full
round at the longest completion and runs the update on the longest rows, so a run that
will not fit fails in its first minute with the knobs to turn, not at step 120.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from hwkit import rundir
from hwkit.errors import ConfigError, NoFitError
from hwkit.log import get_logger
from hwkit.plugins.data.sft import KEPT
from hwkit.plugins.rewards.composite import CompositeReward, RewardSpec, build_rewards
from hwkit.plugins.trainers.base import HFTrainerPlugin
from hwkit.plugins.trainers.config import TrainConfig
from hwkit.plugins.trainers.sft import persona_data, split_last_reply
from hwkit.rejects import Reject, read_rejects, write_rejects
from hwkit.trainer import TrainingData

if TYPE_CHECKING:
    from hwkit.allocator import Job
    from hwkit.plan import Plan
    from hwkit.plugins.data import DataConfig

log = get_logger("hwkit.train")

REFERENCE = "reference"  # the row's own reply (the gold answer), handed to every reward
COLUMNS = "hwkit_columns"  # trl's dataset column holding a row's kept columns (JSON text)


class GRPOConfig(TrainConfig):
    """Group-relative policy optimisation on prompts, scored by ``[[reward]]`` entries."""

    output_dir: Path = Path("runs/grpo")
    learning_rate: float = Field(2e-5, gt=0)
    effective_batch: int = Field(16, ge=2, description="completions per optimizer step")
    num_generations: int | None = Field(
        None, ge=2, description="completions per prompt; None: the allocator picks 8, 4 or 2"
    )
    max_completion_length: int = Field(128, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.0, ge=0, description="KL weight; 0 keeps no reference pass")
    epsilon: float = Field(0.2, gt=0, description="clipping range of the policy ratio")
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = Field(
        "dapo", description="the normalisations that stay exact when the guard splits a batch"
    )
    scale_rewards: Literal["group", "batch", "none"] = "group"
    reward: list[RewardSpec] = Field(default_factory=list, description="[[reward]] tables")
    probe: bool = Field(
        True, description="before step 1, sample and update at the longest shapes once"
    )


def _split(messages: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, str]], str | None]:
    """(the prompt messages, the reply after them or None): a row may be a prompt alone."""
    msgs = [dict(m) for m in messages]
    if len(msgs) > 1 and msgs[-1].get("role") == "assistant":
        prompt, reply = split_last_reply(msgs)
        return prompt, "".join(m.get("content", "") for m in reply)
    return msgs, None


def prompt_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt rows: the messages before the last reply, that reply as ``reference`` for
    rewards that compare with it (empty when the row has none), and the source columns the
    data kept (``mapping.keep``), which rewards read by name."""
    out = []
    for row in rows:
        prompt, reply = _split(row["messages"])
        out.append({"prompt": prompt, REFERENCE: reply or "", **(row.get(KEPT) or {})})
    return out


def trl_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows as trl's dataset holds them: the kept columns as one JSON text column, so a
    column whose cells mix numbers, text and empties stays one Arrow type."""
    out = []
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("prompt", REFERENCE)}
        out.append({"prompt": row["prompt"], REFERENCE: row[REFERENCE], COLUMNS: json.dumps(extra)})
    return out


def reward_rows(columns: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """Per completion, the row a reward sees, from the per-row lists trl passes reward
    functions (a JSON ``COLUMNS`` cell expanded back into the kept columns)."""
    keys = [k for k, v in columns.items() if isinstance(v, list) and len(v) == n]
    rows = []
    for i in range(n):
        row = {k: columns[k][i] for k in keys if k != COLUMNS}
        if COLUMNS in keys:
            row.update(json.loads(columns[COLUMNS][i]))
        rows.append(row)
    return rows


def longest_first(rows: list[dict[str, Any]], lengths: Sequence[int], seed: int) -> list[int]:
    """A seeded shuffle of the row indices with the longest prompt moved to the front."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    if order:
        longest = max(order, key=lambda i: lengths[i])
        order.remove(longest)
        order.insert(0, longest)
    return order


def prompt_ids(tokenizer: Any, prompt: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids as the model sees them: chat template and generation prompt
    (transformers returns ids or a mapping holding them, by version)."""
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def text_of(item: Any) -> str:
    """A trl prompt or completion (a string, or a list of chat messages) as text: the last
    message's content."""
    if isinstance(item, str):
        return item
    if isinstance(item, list) and item:
        last = item[-1]
        return str(last.get("content", "")) if isinstance(last, Mapping) else str(last)
    return ""


def trl_reward_funcs(
    composite: CompositeReward,
) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """One trl reward function per component (trl logs each by name) and their weights,
    normalised to sum to 1 so the total is the composite's weighted mean."""
    funcs: list[Callable[..., list[float | None]]] = []
    for component in composite.components:

        def reward(
            prompts: list[Any], completions: list[Any], _c: Any = component, **columns: Any
        ) -> list[float | None]:
            rows = reward_rows(columns, len(prompts))
            return list(_c([text_of(p) for p in prompts], [text_of(c) for c in completions], rows))

        reward.__name__ = component.key
        funcs.append(reward)
    return funcs, [c.weight / composite.total_weight for c in composite.components]


class GRPOTrainerPlugin(HFTrainerPlugin):
    """Reward-driven RL on prompts (any ``sft`` data: the reply becomes the reference)."""

    name = "grpo"
    config_model: ClassVar[type[GRPOConfig]] = GRPOConfig
    job_kind = "grpo"
    data_hint = 'prompt rows, e.g. [data] source = "rows.jsonl" with the reply as reference'

    def __init__(self, config: TrainConfig | None = None) -> None:
        super().__init__(config)
        self.composite: CompositeReward | None = None
        self.prompt_tokens: list[int] = []
        self.held_rows: list[dict[str, Any]] = []
        self.train_rows: list[dict[str, Any]] = []

    @property
    def grpo(self) -> GRPOConfig:
        assert isinstance(self.config, GRPOConfig)
        return self.config

    def default_data(self) -> DataConfig:
        return persona_data()

    # -- data ---------------------------------------------------------------------------------
    def prepare(self, config: TrainConfig, run_dir: Path, *, resume: bool) -> TrainingData:
        """The rows as the SFT trainer reads them, then as prompts; a prompt too long to
        leave ``max_completion_length`` within ``max_seq_len`` goes to the rejects."""
        assert isinstance(config, GRPOConfig)
        if not config.reward:
            raise ConfigError(
                "the grpo trainer needs at least one [[reward]] table",
                hint='e.g. [[reward]] name = "json_valid" (hwkit rewards list shows them)',
            )
        data = super().prepare(config, run_dir, resume=resume)
        from hwkit.models import resolve_model
        from hwkit.plugins.trainers import modelling

        tokenizer = modelling.load_tokenizer(resolve_model(config.model))
        room = int(config.max_seq_len or 1024) - config.max_completion_length
        if room < 1:
            raise ConfigError(
                f"max_seq_len {config.max_seq_len} leaves no room for prompts after "
                f"max_completion_length {config.max_completion_length}",
                hint="raise max_seq_len (prompt plus completion) or lower max_completion_length",
            )
        kept, lengths, rejects = [], [], []
        for i, row in enumerate(data.train):
            prompt, _ = _split(row["messages"])
            n = len(prompt_ids(tokenizer, prompt))
            if n > room:
                rejects.append(
                    Reject(
                        "prompt too long",
                        record=row,
                        source=rundir.TRAIN_DATA,
                        line=i + 1,
                        detail=f"{n} prompt tokens; max_seq_len {config.max_seq_len} minus "
                        f"max_completion_length {config.max_completion_length} leaves {room}",
                    )
                )
                continue
            kept.append(row)
            lengths.append(n)
        if rejects and not resume:
            path = run_dir / rundir.REJECTS
            write_rejects(path, [*read_rejects(path), *rejects])
            log.warning("grpo.prompts_rejected", count=len(rejects), rejects=str(path))
        if not kept:
            raise ConfigError(
                f"every prompt is longer than {room} tokens (see {run_dir / rundir.REJECTS})",
                hint="raise max_seq_len or lower max_completion_length",
            )
        self.prompt_tokens = lengths
        return TrainingData(kept, data.eval, data.report)

    def job(self, config: TrainConfig, data: TrainingData) -> Job:
        """The update at the longest prompt plus the longest completion, and the sampling
        of the step's completions (group size left open unless the config names it)."""
        from hwkit.allocator import Job, ModelSpec
        from hwkit.jobs import world
        from hwkit.models import resolve_model

        assert isinstance(config, GRPOConfig)
        _, world_size = world()
        full = config.method == "full"
        return Job(
            kind="grpo",
            model=ModelSpec.from_pretrained(resolve_model(config.model)),
            seq_len=max(self.prompt_tokens, default=1) + config.max_completion_length,
            completion_len=config.max_completion_length,
            group_size=config.num_generations,
            effective_batch=max(1, math.ceil(config.effective_batch / world_size)),
            lora_rank=None if full else config.lora_rank,
            quantization="nf4" if config.method == "qlora" else config.quantization,
            gradient_checkpointing=config.gradient_checkpointing,
            micro_batch=config.micro_batch,
            reference=full and config.beta > 0,
            lora_dropout=not full and config.lora_dropout > 0,
        )

    def _datasets(self, train: Any, eval_data: Any | None) -> tuple[Any, Any | None]:
        """Prompt rows, the longest first (trl's own shuffle is off: this order is seeded);
        held-out rows are kept for the held-out reward, not given to trl."""
        from datasets import Dataset

        rows = prompt_rows(list(train))
        lengths = self.prompt_tokens if len(self.prompt_tokens) == len(rows) else [0] * len(rows)
        order = longest_first(rows, lengths, self.config.seed)
        held = prompt_rows(list(eval_data or []))
        self.held_rows = held[: self.config.eval.max_rows]
        self.train_rows = [rows[i] for i in order]
        return Dataset.from_list(trl_rows(self.train_rows)), None

    # -- trl ----------------------------------------------------------------------------------
    def trl_args(self, common: dict[str, Any], plan: Plan) -> Any:
        from trl import GRPOConfig as TrlGRPOConfig

        cfg = self.grpo
        args = {k: v for k, v in common.items() if k != "max_length"}
        return TrlGRPOConfig(
            **args,
            num_generations=plan.group_size,
            generation_batch_size=plan.generation_batch,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            beta=cfg.beta,
            epsilon=cfg.epsilon,
            loss_type=cfg.loss_type,
            scale_rewards=cfg.scale_rewards,
            shuffle_dataset=False,
            reward_weights=self._reward_funcs()[1],
            log_completions=False,
        )

    def composite_reward(self) -> CompositeReward:
        """The run's rewards, built once and fitted on the training prompt rows."""
        if self.composite is None:
            from hwkit.runtime import current

            self.composite = build_rewards(self.grpo.reward, current().plugins)
            for component in self.composite.components:
                if not component.reward.reads_completion and component.weight > 0:
                    log.warning(
                        "grpo.reward_ignores_completion",
                        reward=component.key,
                        why="every completion of a prompt gets the same value, which the "
                        "group-relative advantage cancels: it changes no update",
                        hint="use it for hwkit rewards pairs (DPO), or weight 0",
                    )
            # rewards that normalise over the data (``columns``) fit on the training rows
            self.composite.fit(self.train_rows)
        return self.composite

    def _reward_funcs(self) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
        return trl_reward_funcs(self.composite_reward())

    def trl_trainer(self, **kwargs: Any) -> Any:
        from transformers import Trainer
        from trl import GRPOTrainer

        from hwkit.plugins.trainers.guarded import GuardedMixin

        class GuardedStep(GuardedMixin, Trainer):
            """The guard beneath trl's own step: GRPOTrainer.training_step counts micro-steps
            (which slice of the sampled batch a micro-step trains on, and when to sample
            again), then calls this."""

        # trl's training_step is untyped, the mixin's typed: mypy calls the two incompatible
        class GuardedGRPOTrainer(GRPOTrainer, GuardedStep):  # type: ignore[misc]
            # "grpo" and "dr_grpo" average over the rows given: a chunk is weighted by its
            # share; "dapo" sums over the generation batch's tokens: chunks add up as they are.
            hwkit_scale_chunks = self.grpo.loss_type != "dapo"

        funcs: list[Any] = list(self._reward_funcs()[0])
        return GuardedGRPOTrainer(reward_funcs=funcs, **kwargs)

    # -- the probe and the held-out reward ---------------------------------------------------------
    def ready(self, trainer: Any, plan: Plan) -> None:
        if self.grpo.probe:
            probe(trainer, plan, self.grpo)

    def held_out(self, trainer: Any, eval_ds: Any | None) -> Callable[[], dict[str, Any]] | None:
        if not self.held_rows:
            return None
        from hwkit.plugins.trainers.heldout_reward import held_out_reward

        rows, composite, cfg = self.held_rows, self.composite_reward(), self.grpo
        return lambda: held_out_reward(
            trainer.model,
            trainer.processing_class,
            rows,
            composite,
            max_new_tokens=cfg.max_completion_length,
        )

    def fit(self, train: Any, **kwargs: Any) -> Any:
        try:
            result = super().fit(train, **kwargs)
        finally:
            if self.composite is not None:
                self._write_reward_stats(Path(kwargs["output_dir"]))
        return result

    def _write_reward_stats(self, output_dir: Path) -> None:
        from hwkit import atomic

        assert self.composite is not None
        atomic.write_json_atomic(output_dir / "rewards.json", self.composite.stats())


def probe(trainer: Any, plan: Plan, cfg: GRPOConfig) -> None:
    """Sample one full round at the longest prompt and completion, then run the update on
    micro-batch rows of that length (gradients dropped): the step's peaks, before step 1."""
    import torch

    dataset = trainer.train_dataset
    first = dataset[0]["prompt"]
    tokenizer = trainer.processing_class
    model = trainer.model
    ids = torch.tensor([prompt_ids(tokenizer, first)])
    sequences = int(plan.generation_batch or plan.micro_batch)
    device = next(model.parameters()).device
    batch = ids.to(device).repeat(sequences, 1)
    new = cfg.max_completion_length
    what = (
        f"the longest prompt ({ids.shape[1]} tokens) with {sequences} completions of {new} "
        f"tokens sampled together, micro-batch {plan.micro_batch}"
    )
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model.generate(
                batch,
                attention_mask=torch.ones_like(batch),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        model.train(was_training)
        rows = out[: plan.micro_batch]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
    except torch.OutOfMemoryError as exc:
        raise NoFitError(
            f"grpo does not fit at its longest shapes: {what}: {exc}",
            hint="lower num_generations, max_completion_length or effective_batch",
        ) from None
    log.info(
        "grpo.probe",
        prompt_tokens=int(ids.shape[1]),
        sequences=sequences,
        completion_tokens=new,
        micro_batch=plan.micro_batch,
        steps=math.ceil(len(dataset) * (plan.group_size or 1) / max(plan.effective_batch, 1)),
    )
