"""The allocator's preferences: which dtype, quantisation, attention, checkpointing and
inference runtime to try on a device, and why. Read from the device's capabilities and its
profile only: no backend is named here, so a third party's device plans like a built-in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.allocator.job import Job
from hwkit.allocator.memory import Settings

if TYPE_CHECKING:
    from hwkit.allocator.targets import Target

# Weight quantisation the search may fall back to, most memory saved first (QLoRA's nf4).
QUANT_PREFERENCE = ("nf4", "int8")
GOOD_MICRO_BATCH = 4  # below this, checkpointing is worth it if it buys a larger micro-batch
INFERENCE_KINDS = frozenset({"embed", "generate", "rerank"})


def choose_dtype(job: Job, target: Target) -> tuple[str, str]:
    """The compute dtype and why: the profile's training dtype where the device runs it
    natively; else bf16, fp16, fp32 in that order among the device's native types."""
    if job.kind in INFERENCE_KINDS:
        return inference_dtype(target)
    caps = target.device.capabilities
    native = set(caps.dtypes)
    profile = target.profile
    if not caps.can_train:
        dtype = "float16" if "float16" in native else "float32"
        return dtype, f"{target.device.id} runs inference only: {dtype}"
    wanted = profile.training.dtype
    if wanted == "float32" and "bfloat16" in native:
        return "bfloat16", (
            f"bf16 is native on {target.device.name}: float32's range at half the memory "
            f"(profile {profile.name} would use float32)"
        )
    if wanted in native and wanted in ("bfloat16", "float16", "float32"):
        why = f"profile {profile.name} runs {wanted}, native here"
        if wanted != "bfloat16" and "bfloat16" in profile.compute.emulated_dtypes:
            why += " (bf16 is only emulated here)"
        return wanted, why
    for dtype in ("bfloat16", "float16"):
        if dtype in native:
            return dtype, f"{dtype} is native on {target.device.name} (profile wants {wanted})"
    return "float32", f"no native 16-bit float type on {target.device.name}: float32"


def inference_dtype(target: Target) -> tuple[str, str]:
    """The dtype a model runs in here: the profile's serving dtype, else the widest-ranged
    native 16-bit type (bf16, then fp16), else float32."""
    device, profile = target.device, target.profile
    native = set(device.capabilities.dtypes)
    wanted = profile.inference.dtype
    if wanted and wanted in native:
        return wanted, f"profile {profile.name} runs inference in {wanted}, native here"
    if "bfloat16" in native:
        return "bfloat16", (
            f"bf16 is native on {device.name}: half of float32's memory and bandwidth per "
            "token, with float32's range"
        )
    if "float16" in native:
        emulated = "bfloat16" in profile.compute.emulated_dtypes
        return "float16", (
            f"fp16 is native on {device.name}"
            + ("; bf16 is only emulated here" if emulated else "")
            + ": half of float32's memory and bandwidth per token"
        )
    return "float32", f"no native 16-bit float on {device.name}: inference in float32"


def inference_weights(job: Job, target: Target, runtime: str | None) -> tuple[list[str], str]:
    """Weight formats to try for an inference job, in order, and a note for the reason.

    A GGUF or IR file runs as stored. Otherwise the profile's list for the job (for the
    device's first runtime), else unquantised first and then the device's weight kernels.
    """
    spec, device, profile = job.model, target.device, target.profile
    if spec.stored is not None:
        return [spec.stored.quantization], (
            f"{spec.stored.quantization} as stored in the {spec.stored.format} file "
            f"({spec.stored.bytes / 1e9:.2f} GB)"
        )
    encoder = job.kind != "generate"
    listed = profile.inference.encoder_weights if encoder else profile.inference.weights
    runs = device.capabilities.runtimes
    if listed is not None and (runtime is None or not runs or runtime == runs[0]):
        options: list[str] = list(listed)
        note = (
            f"profile {profile.name} runs {'encoders' if encoder else 'generation'} with "
            f"{', '.join(options)} weights, in that order"
        )
    else:
        options = ["none", *(q for q in QUANT_PREFERENCE if q in device.capabilities.quantization)]
        note = ""
    if job.quantization != "auto":
        if job.quantization != "none" and job.quantization not in options:
            return [], (
                f"{job.quantization} weights are not a format {device.id} runs "
                f"(here: {', '.join(options)})"
            )
        return [job.quantization], f"{job.quantization} as requested"
    return options, note


def quant_options(job: Job, target: Target) -> tuple[list[str], str]:
    """Weight formats to try, in order, and a note for the reason string."""
    device = target.device
    kernels = device.capabilities.quantization
    if job.quantization != "auto":
        if job.quantization in QUANT_PREFERENCE and job.quantization not in kernels:
            declared = ", ".join(kernels) or "none"
            return [], (
                f"{job.quantization} weights need kernels {device.id} does not declare "
                f"(declared: {declared})"
            )
        return [job.quantization], f"{job.quantization} as requested"
    if job.full_weights:
        return ["none"], "full training needs unquantised weights"
    fallbacks = [q for q in QUANT_PREFERENCE if q in kernels]
    if fallbacks:
        return ["none", *fallbacks], ""
    return ["none"], f"{device.id} declares no 4-bit/8-bit weight kernels"


def attention(job: Job, target: Target, dtype: str) -> tuple[str, str]:
    """The profile's attention implementation, where the device has it and the dtype allows."""
    wanted = target.profile.training.attention
    if job.kind in INFERENCE_KINDS and target.profile.inference.attention:
        wanted = target.profile.inference.attention
    available = target.device.capabilities.attention
    if wanted == "flash_attention_2" and dtype == "float32":
        return "sdpa", "flash-attention needs 16-bit inputs; sdpa in float32"
    if not available:
        return "sdpa", (
            f"{target.device.id} declares no attention implementation: its runtime fuses "
            "attention (counted as sdpa)"
        )
    if wanted not in available:
        fallback = "sdpa" if "sdpa" in available else (available[0] if available else "eager")
        return fallback, f"profile {target.profile.name} wants {wanted}; the device has {fallback}"
    if wanted == "flash_attention_2":
        return wanted, (
            f"profile {target.profile.name} default (needs the flash-attn package; sdpa otherwise)"
        )
    return wanted, f"profile {target.profile.name} default"


def choose_runtime(job: Job, target: Target) -> tuple[str | None, str]:
    """The inference runtime for ``job`` on this device: the first of the job's acceptable
    runtimes the device runs (any job that names none: the device's first); None for
    training (trainers run on torch)."""
    if job.kind not in INFERENCE_KINDS:
        return None, ""
    device = target.device
    runs = device.capabilities.runtimes
    if not job.runtimes and runs:
        return runs[0], f"{runs[0]}: {device.id}'s first inference runtime"
    wanted = job.runtimes or ("transformers",)
    for name in wanted:
        if name in runs:
            if len(wanted) == 1:
                return name, f"{name}: the runtime that loads this model, and {device.id} runs it"
            return name, f"{name}: the first of {', '.join(wanted)} that {device.id} runs"
    return None, (
        f"{device.id} ({device.name}) runs {', '.join(runs) or 'no inference runtime'}, "
        f"not {' or '.join(wanted)}"
    )


def pick_checkpointing(job: Job, found: dict[bool, tuple[Settings, int]]) -> tuple[Settings, str]:
    """Among the fits with and without checkpointing, the one that trains fastest."""
    if job.gradient_checkpointing is not None:
        settings = found[job.gradient_checkpointing][0]
        return settings, f"{'on' if job.gradient_checkpointing else 'off'} as requested"
    if not job.trains:
        return found[False][0], "inference keeps no activations for backward"
    without, with_gc = found.get(False), found.get(True)
    if without is None:
        assert with_gc is not None
        return with_gc[0], "needed: nothing fits without it, even at micro-batch 1"
    mb = without[0].micro_batch
    if (
        with_gc is not None
        and mb < min(job.effective_batch, GOOD_MICRO_BATCH)
        and with_gc[0].micro_batch > mb
    ):
        return with_gc[0], (
            f"on: without it only micro-batch {mb} fits; with it {with_gc[0].micro_batch} "
            "(recomputing costs ~1/3 more compute, tiny batches cost more)"
        )
    return without[0], "off: not needed to fit (it would cost ~1/3 more compute)"


def quant_reason(quant: str, job: Job, note: str) -> str:
    if job.quantization != "auto":
        return note
    if quant != "none":
        label = "nf4 (QLoRA)" if quant == "nf4" else quant
        return f"{label}: the unquantised weights do not fit"
    return "none: the weights fit unquantised" + (f" ({note})" if note else "")


def inference_quant_reason(quant: str, options: list[str], note: str, job: Job) -> str:
    """Why an inference plan reads its weights in ``quant`` (the first of ``options`` that
    fits), worded for serving."""
    if job.quantization != "auto" or job.model.stored is not None:
        return note
    if quant == options[0]:
        return f"{quant}: " + (note or "the unquantised weights fit")
    skipped = ", ".join(options[: options.index(quant)])
    return f"{quant}: {skipped} do not fit" + (f" ({note})" if note else "")
