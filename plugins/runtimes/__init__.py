"""Inference runtimes: what runs a model for generation on a planned device.

``transformers`` ships here (CUDA, XPU, CPU: the plan's dtype, attention and bitsandbytes
quantisation), and ``llama.cpp`` (GGUF files on the CPU, or CUDA with a GPU build of
llama-cpp-python); ``openvino`` joins them in the next step. The core picks one
through the plan (``hwkit.jobs.load_generator``), by the formats it loads and the runtimes
the device declares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from hwkit.inference import InferenceRuntime


@hookimpl
def hwkit_register_runtimes(register: Register[type[InferenceRuntime]]) -> None:
    from hwkit.plugins.runtimes.llama_cpp import LlamaCppRuntime
    from hwkit.plugins.runtimes.openvino import OpenVINORuntime
    from hwkit.plugins.runtimes.transformers import TransformersRuntime

    register(TransformersRuntime)
    register(LlamaCppRuntime)
    register(OpenVINORuntime)
