"""The memory model: estimated peak bytes of a job, by part, from architecture facts.

Each part follows what PyTorch keeps alive at the peak of a training step (the start of
the backward pass, when every saved activation, the saved log-softmax and its gradients
exist together). Two factors were calibrated on measured CPU runs of SmolLM2-135M
(``bench/allocator_accuracy.py``; see docs/allocator.md): ``ACTIVATION_SCALE`` and
``LOGIT_BYTES_FP32``. Everything else is counted from shapes and dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hwkit.allocator.job import Job
from hwkit.allocator.spec import ModelSpec
from hwkit.device import MemoryTraits
from hwkit.plan import MemoryEstimate

GiB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Bytes per weight of a quantised linear layer: NF4 = 4 bits + one fp32 absmax per 64
# weights (bitsandbytes without double quantisation; with it, slightly less).
# INT4 = 4 bits + one fp16 scale per group of 128 (OpenVINO/NNCF symmetric weight
# compression; GGUF's 4-bit block formats are read from the file instead).
QUANT_BYTES = {"nf4": 0.5 + 4 / 64, "int8": 1.0 + 4 / 4096, "int4": 0.5 + 2 / 128}

# Calibrated (docs/allocator.md): saved activations measured / counted tensor elements.
ACTIVATION_SCALE = 1.0
# Bytes per logit element at the peak of the loss's backward in float32: the logits the
# caller keeps (trl keeps ``outputs``), the saved log-softmax, and the two gradients.
LOGIT_BYTES_FP32 = 16.0


@dataclass(frozen=True)
class Settings:
    """The choices the estimate depends on (one candidate the planner tries)."""

    dtype: str
    quantization: str
    micro_batch: int
    gradient_checkpointing: bool
    attention: str = "sdpa"
    traits: MemoryTraits = field(default_factory=MemoryTraits)
    # grpo: completions per prompt, and completions generated together
    group_size: int = 0
    generation_batch: int = 0


def _act_elems_per_token_layer(
    spec: ModelSpec, lora_rank: int | None, lora_dropout: bool = False
) -> int:
    """Tensor elements one block saves for backward, per token.

    Decoder (Llama-style): residual input and its norm, rotated q, keys and values after
    GQA expansion, attention output and its reshaped copy, second residual and norm
    (4 hidden + 5 q-width), and the MLP's gate, activation, up and product (4 intermediate;
    2 for a plain GELU MLP). Encoder (BERT): the same plus dropout outputs.
    """
    h, q, i = spec.hidden, spec.q_dim, spec.intermediate
    mlp = 4 * i if spec.mlp_matrices == 3 else 2 * i
    elems = 4 * h + 5 * q + mlp
    if spec.encoder:
        elems += 3 * h + i  # dropout outputs after attention, output and intermediate
    if lora_rank:
        elems += spec.lora_modules() * lora_rank
        if lora_dropout:
            elems += spec.lora_input_elems()
    return elems


def _attention_square_bytes(spec: ModelSpec, seq_len: int, attention: str, dtype_b: int) -> int:
    """Per row and layer: the s x s scores that eager attention (and a masked encoder) keeps."""
    if attention == "eager" or spec.encoder:
        return spec.num_heads * seq_len * seq_len * (4 + dtype_b)
    return 0


def weight_bytes(
    spec: ModelSpec, dtype: str, quantization: str, *, master_fp32: bool = False
) -> int:
    """Base weights: linear layers in the quantised format, the rest in ``dtype``; an
    exported file's own bytes when the weights are stored (GGUF, OpenVINO IR)."""
    if spec.stored is not None:
        return spec.stored.bytes
    dtype_b = 4 if master_fp32 else DTYPE_BYTES[dtype]
    linear = spec.num_layers * spec.layer_linear_params
    rest = spec.param_count - linear
    if quantization in QUANT_BYTES:
        return int(linear * QUANT_BYTES[quantization] + rest * dtype_b)
    return spec.param_count * dtype_b


def kv_cache_bytes(spec: ModelSpec, context: int, sequences: int, dtype: str) -> int:
    """Keys and values of every layer: 2 x layers x KV heads x head dim x context x bytes,
    per sequence; in the stored format's cache type where its runtime fixes one."""
    kv_b = DTYPE_BYTES[spec.stored.kv_dtype] if spec.stored and spec.stored.kv_dtype else None
    per_token = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim
    return per_token * context * sequences * (kv_b or DTYPE_BYTES[dtype])


def generation_peak(job: Job, settings: Settings) -> int:
    """GRPO's sampling phase: the KV cache of every completion generated together at the
    full length, the prompts' prefill (one block's transients at a time) and the logits
    of the last position (and their softmax)."""
    spec = job.model
    dtype_b = DTYPE_BYTES[settings.dtype]
    sequences = settings.generation_batch or settings.micro_batch
    prompt = job.seq_len - job.completion_len
    prefill = (4 * spec.hidden + 3 * spec.intermediate) * dtype_b * sequences * prompt
    prefill += _attention_square_bytes(spec, prompt, settings.attention, dtype_b) * sequences
    kv = kv_cache_bytes(spec, job.seq_len, sequences, settings.dtype)
    return kv + prefill + sequences * spec.vocab * 4 * 2


def estimate(job: Job, settings: Settings) -> MemoryEstimate:
    """Peak bytes of ``job`` under ``settings``, by part."""
    spec = job.model
    dtype_b = DTYPE_BYTES[settings.dtype]
    rows = settings.micro_batch * job.rows_per_example
    tokens = rows * job.seq_len
    traits = settings.traits
    parts = dict.fromkeys(MemoryEstimate.model_fields, 0)
    step_temporary = 0
    retained = 0  # host heap kept after freed activations (MemoryTraits.heap_retention)

    if job.kind in ("sft", "dpo") or (job.kind == "grpo" and not job.full_weights):
        assert job.lora_rank is not None
        lora = spec.lora_params(job.lora_rank)
        parts["weights"] = weight_bytes(spec, settings.dtype, settings.quantization)
        parts["adapters"] = lora * 4  # peft keeps adapters in float32 (autocast_adapter_dtype)
        parts["gradients"] = lora * 4
        parts["optimizer"] = lora * 8  # AdamW: two float32 moments
        if settings.quantization in QUANT_BYTES:
            # each matmul dequantises its weight: the largest matrix, transiently
            parts["overhead"] += spec.largest_matrix * dtype_b
    elif job.full_weights:
        # fp16 training keeps float32 master weights (GradScaler cannot unscale fp16
        # gradients); bf16 and fp32 train in their own dtype.
        master = settings.dtype == "float16"
        param_b = 4 if master else dtype_b
        parts["weights"] = spec.param_count * param_b
        if job.reference:  # grpo's frozen reference copy for the KL term
            parts["weights"] += spec.param_count * dtype_b
        parts["gradients"] = spec.param_count * param_b
        parts["optimizer"] = spec.param_count * 2 * param_b  # AdamW moments in the param dtype
        # AdamW's foreach step makes one parameter-sized temporary (measured on CPU)
        step_temporary = spec.param_count * param_b
    else:
        parts["weights"] = weight_bytes(spec, settings.dtype, settings.quantization)

    upcast = 0 if dtype_b == 4 else 2 * spec.hidden * 4  # norms compute in float32
    if job.trains:
        per_layer = _act_elems_per_token_layer(spec, job.lora_rank, job.lora_dropout) * dtype_b
        per_layer += upcast
        if job.lora_rank and job.lora_dropout:
            per_layer += spec.lora_input_elems()  # the dropout masks, a byte per element
        square = _attention_square_bytes(spec, job.seq_len, settings.attention, dtype_b) * rows
        if settings.gradient_checkpointing:
            stored = spec.num_layers * spec.hidden * dtype_b * tokens
            acts = stored + per_layer * tokens + square
        else:
            acts = spec.num_layers * (per_layer * tokens + square)
        acts += 2 * spec.hidden * dtype_b * tokens  # embeddings out, final norm
        retained = int(traits.heap_retention * spec.num_layers * per_layer * tokens)
        parts["activations"] = int(acts * ACTIVATION_SCALE)
        if not spec.encoder:
            logit_b = LOGIT_BYTES_FP32 if dtype_b == 4 else LOGIT_BYTES_FP32 - 4 + dtype_b
            if job.kind in ("dpo", "grpo"):
                # dpo: log-probs of the shifted slice; grpo: logits / temperature
                logit_b += 4
            scored = tokens
            if job.kind == "grpo":  # trl keeps logits for the completion positions only
                scored = rows * job.completion_len
            parts["logits"] = int(scored * spec.vocab * logit_b)
        else:  # pooled embeddings and the in-batch similarity matrix (a cross-encoder's
            # one logit per pair is less: counted the same, an over-estimate)
            parts["logits"] = rows * spec.hidden * 4 * 3 + rows * rows * 4 * 3
    else:
        # inference: one block's transient tensors at a time, no saved activations
        transient = (4 * spec.hidden + 3 * spec.intermediate) * dtype_b * tokens
        transient += _attention_square_bytes(spec, job.seq_len, settings.attention, dtype_b) * rows
        parts["activations"] = transient
        if job.kind == "generate":
            parts["kv_cache"] = kv_cache_bytes(spec, job.seq_len, rows, settings.dtype)
            parts["logits"] = rows * spec.vocab * 4 * 2  # last position only, and its softmax
        else:
            parts["logits"] = rows * spec.hidden * 4 * 2  # pooled, normalised vectors

    # Two peaks: the start of backward (activations, logits) and the optimizer step (its
    # temporaries, after activations are freed). Budget the larger; the excess of the
    # step's peak is counted under "optimizer".
    backward_peak = parts["activations"] + parts["logits"] + retained
    parts["optimizer"] += max(0, step_temporary - backward_peak)
    if job.kind == "grpo":
        # A third peak: sampling the completions, between optimizer steps. Its excess over
        # the backward peak is counted under "kv_cache".
        parts["kv_cache"] = max(0, generation_peak(job, settings) - backward_peak)
    parts["overhead"] += retained
    transient_parts = parts["activations"] + parts["logits"] + parts["kv_cache"]
    parts["overhead"] += traits.runtime_overhead + int(traits.fragmentation * transient_parts)
    return MemoryEstimate(**parts)
