"""The ``openvino`` inference runtime: a KV-cache OpenVINO IR through OpenVINO GenAI.

It loads the stateful IR that ``hwkit export openvino --kv-cache`` writes (or optimum-intel
exports: ``openvino_model.xml`` with its state, ``openvino_tokenizer.xml`` and
``openvino_detokenizer.xml`` beside it) into an ``openvino_genai.LLMPipeline`` on the
planned device: the CPU, an Intel GPU (``xpu`` in hwkit) or the NPU, where GenAI compiles
static shapes sized from the plan's sequence length. Prompts are rendered with the chat
template the tokenizer IR carries and tokenised by GenAI's own tokenizer; replies are
greedy unless a temperature is given (``GenerationParams.seed`` sets GenAI's ``rng_seed``),
streamed through GenAI's ``TextStreamer`` from a worker thread. openvino_genai is imported
only when a model is loaded.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hwkit.errors import ConfigError, NotFoundError, UnavailableError, UsageError
from hwkit.inference import (
    Emit,
    FinishReason,
    GenerationParams,
    Generator,
    InferenceRuntime,
    Message,
    Prompt,
    StreamResult,
    check_context,
    stream_from_worker,
)
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.models import ModelFormat, ResolvedModel
    from hwkit.plan import Plan

log = get_logger(__name__)

RUNTIME = "openvino"
TOKENIZER_XML = "openvino_tokenizer.xml"
DETOKENIZER_XML = "openvino_detokenizer.xml"
REEXPORT = "re-export it with: hwkit export openvino SOURCE --kv-cache"
# The NPU compiles a static KV cache of MAX_PROMPT_LEN + MIN_RESPONSE_LEN tokens: the
# plan's sequence length, of which a reply is guaranteed this share (at most this many).
NPU_RESPONSE_SHARE = 4
NPU_MAX_MIN_RESPONSE = 256


def ir_xml(model: ResolvedModel) -> Path:
    """The IR's model XML in the resolved directory."""
    from hwkit.models import OPENVINO_XML

    for name in OPENVINO_XML:
        if (model.path / name).is_file():
            return model.path / name
    raise NotFoundError(
        f"{model.given}: no OpenVINO IR ({' or '.join(OPENVINO_XML)}) in {model.path}",
        hint=REEXPORT,
    )


def check_generation_ir(model: ResolvedModel, device: Device) -> Path:
    """The IR's XML when it is a KV-cache IR with tokenizer IRs; a one-line UsageError
    naming the model, the device and the export that works otherwise."""
    from hwkit.plugins.exporters.openvino_stateful import is_stateful_xml

    xml = ir_xml(model)
    if not is_stateful_xml(xml):
        raise UsageError(
            f"{model.given}: {xml.name} is a full-sequence OpenVINO IR (no KV cache, for "
            f"scoring); the openvino runtime generates on {device.id} from a KV-cache IR",
            hint=REEXPORT,
        )
    missing = [n for n in (TOKENIZER_XML, DETOKENIZER_XML) if not (model.path / n).is_file()]
    if missing:
        raise NotFoundError(
            f"{model.given}: the KV-cache IR has no {' or '.join(missing)}, which the "
            f"openvino runtime tokenises with on {device.id}",
            hint=REEXPORT,
        )
    return xml


def openvino_device(model: ResolvedModel, device: Device) -> str:
    """The OpenVINO device for ``device`` (``CPU``, ``GPU.1``, ``NPU``); refused in one
    line when OpenVINO cannot run there or does not see it."""
    import openvino as ov

    from hwkit.plugins.embedders.openvino_embedder import openvino_device_name

    try:
        name = str(getattr(device, "ov_device", None) or openvino_device_name(device))
    except UsageError:
        runs = ", ".join(device.capabilities.runtimes) or "none"
        raise UsageError(
            f"{model.given}: the openvino runtime cannot run on {device.id} ({device.name})",
            hint=f"{device.id} runs: {runs}",
        ) from None
    available = list(ov.Core().available_devices)
    if name not in available and not any(d.split(".")[0] == name for d in available):
        raise UnavailableError(
            f"{model.given}: OpenVINO does not see {name} for {device.id} ({device.name})",
            hint=f"OpenVINO here lists {', '.join(available) or 'no device'}; "
            "run it on one of those (--device cpu:0) or install that device's driver",
        )
    return name


def npu_lengths(max_seq_len: int) -> tuple[int, int]:
    """(MAX_PROMPT_LEN, MIN_RESPONSE_LEN) for an NPU: together the plan's sequence length."""
    response = max(1, min(NPU_MAX_MIN_RESPONSE, max_seq_len // NPU_RESPONSE_SHARE))
    return max_seq_len - response, response


def pipeline_properties(plan: Plan, ov_device: str) -> dict[str, Any]:
    """LLMPipeline properties from the plan: the compute precision (and, on the CPU, the
    KV cache's, which is u8 by default) from the plan's dtype; static shapes on an NPU."""
    from hwkit.paths import cache_dir
    from hwkit.plugins.embedders.openvino_embedder import PRECISION_HINTS

    base = ov_device.split(".")[0]
    props: dict[str, Any] = {}
    if base == "NPU":
        prompt, response = npu_lengths(plan.max_seq_len)
        props.update(MAX_PROMPT_LEN=prompt, MIN_RESPONSE_LEN=response)
    else:
        hint = PRECISION_HINTS.get(plan.dtype)
        if hint:
            props["INFERENCE_PRECISION_HINT"] = hint
            if base == "CPU":
                props["KV_CACHE_PRECISION"] = hint
    if base != "CPU":  # GPU/NPU compilation is slow: OpenVINO keeps the compiled blobs
        props["CACHE_DIR"] = str(cache_dir("openvino") / "compiled")
    return props


def model_context(model: ResolvedModel) -> int | None:
    """``max_position_embeddings`` from the IR's config.json, when it has one."""
    path = model.path / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the model config: {exc}") from None
    limit = config.get("max_position_embeddings")
    return int(limit) if limit else None


def _finish(genai: Any, encoded: Any, tokens: list[int], max_new: int) -> FinishReason:
    reasons = list(getattr(encoded, "finish_reasons", None) or [])
    if reasons:
        return "length" if reasons[0] == genai.GenerationFinishReason.LENGTH else "stop"
    return "length" if len(tokens) >= max_new else "stop"


class OpenVINOGenerator(Generator):
    """An ``openvino_genai.LLMPipeline`` on one OpenVINO device; one generation at a time."""

    def __init__(
        self,
        name: str,
        pipeline: Any,
        plan: Plan,
        device: Device,
        ov_device: str,
        trained_context: int | None,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.tokenizer = pipeline.get_tokenizer()
        self.plan = plan
        self.device = device
        self.ov_device = ov_device
        self.trained_context = trained_context
        self.lock = threading.Lock()
        static = ov_device.split(".")[0] == "NPU"
        self.max_prompt = npu_lengths(plan.max_seq_len)[0] if static else None

    @property
    def context(self) -> tuple[int, str]:
        """Tokens a sequence may hold, and whose limit that is: the model's, or the plan's
        when its KV-cache estimate was made for fewer."""
        limit = self.trained_context
        if limit is None or self.plan.max_seq_len < limit:
            return self.plan.max_seq_len, "planned"
        return limit, "model's"

    def _closed(self) -> UsageError:
        return UsageError(f"{self.name} is closed", hint="load the model again")

    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> Prompt:
        """Render ``messages`` with the tokenizer IR's chat template; refuse prompts over
        the context (on an NPU, also over its static prompt length)."""
        if self.pipeline is None:
            raise self._closed()
        try:
            text = self.tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True
            )
        except Exception as exc:  # no template in the IR, or the template refused them
            raise UsageError(
                f"{self.name}: the chat template refused the messages: {exc}",
                hint="re-export with hwkit export openvino --kv-cache from a model with a "
                "chat template",
            ) from None
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        n = int(ids.input_ids.get_shape()[1])
        check_context(n, max_new_tokens, self.context)
        if self.max_prompt is not None and n > self.max_prompt:
            raise UsageError(
                f"prompt of {n} tokens exceeds the {self.ov_device} pipeline's static prompt "
                f"length of {self.max_prompt} (MAX_PROMPT_LEN)",
                hint="send fewer messages, or load the model with a longer context",
            )
        return Prompt(ids, n, max_new_tokens)

    def _config(self, prompt: Prompt, params: GenerationParams) -> Any:
        config = self.pipeline.get_generation_config()
        config.max_new_tokens = prompt.max_new_tokens
        if params.temperature:
            config.do_sample = True
            config.temperature = float(params.temperature)
            config.top_p = float(params.top_p or 1.0)
            # GenAI seeds each request's sampler with rng_seed, 0 unless set: without a
            # seed every sampled reply to one prompt would be the same, so draw one
            seed = params.seed if params.seed is not None else secrets.randbits(32)
            config.rng_seed = seed % 2**32
        else:
            config.do_sample = False
        return config

    def stream(
        self, prompt: Prompt, params: GenerationParams, result: StreamResult | None = None
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; ``result`` is complete when this ends.

        Generation runs on a worker thread holding ``lock``; GenAI's ``TextStreamer`` puts
        each decoded piece on a queue this iterator reads. A consumer that closes the
        iterator early stops the generation at the next token.
        """
        import openvino_genai as genai

        result = result if result is not None else StreamResult()
        if self.pipeline is None:
            raise self._closed()
        config = self._config(prompt, params)

        def work(emit: Emit, stop: threading.Event) -> None:
            def push(piece: str) -> Any:
                if piece:
                    emit(piece)
                running = genai.StreamingStatus.RUNNING
                return genai.StreamingStatus.STOP if stop.is_set() else running

            with self.lock:
                pipeline = self.pipeline
                if pipeline is None:
                    raise self._closed()
                streamer = genai.TextStreamer(self.tokenizer, push)
                encoded = pipeline.generate(prompt.ids, config, streamer)
            tokens = [int(t) for t in encoded.tokens[0]]
            result.completion_tokens = len(tokens)
            result.finish_reason = _finish(genai, encoded, tokens, prompt.max_new_tokens)

        return stream_from_worker(work, result)

    def close(self) -> None:
        """Free the pipeline (waits for a generation in progress)."""
        with self.lock:
            self.pipeline = None
            self.tokenizer = None


class OpenVINORuntime(InferenceRuntime):
    """KV-cache OpenVINO IRs through OpenVINO GenAI, on the CPU, an Intel GPU or the NPU."""

    name: ClassVar[str] = RUNTIME
    formats: ClassVar[tuple[ModelFormat, ...]] = ("openvino",)

    def load(self, model: ResolvedModel, plan: Plan, device: Device) -> Generator:
        import time

        from hwkit.extras import require

        if model.format != "openvino":
            raise UsageError(
                f"{model.given}: the openvino runtime loads OpenVINO IR directories, not "
                f"{model.format} models",
                hint="export it with: hwkit export openvino SOURCE --kv-cache",
            )
        genai = require("openvino_genai", purpose="the openvino runtime")
        check_generation_ir(model, device)
        ov_device = openvino_device(model, device)
        props = pipeline_properties(plan, ov_device)
        start = time.perf_counter()
        try:
            pipeline = genai.LLMPipeline(str(model.path), ov_device, **props)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnavailableError(
                f"{model.given}: OpenVINO GenAI cannot load it on {ov_device} "
                f"({device.id}): {first}",
                hint=REEXPORT,
            ) from None
        generator = OpenVINOGenerator(
            model.label, pipeline, plan, device, ov_device, model_context(model)
        )
        log.info(
            "runtime.load",
            runtime=self.name,
            model=model.label,
            device=device.id,
            openvino_device=ov_device,
            properties=props,
            seconds=round(time.perf_counter() - start, 2),
        )
        return generator
