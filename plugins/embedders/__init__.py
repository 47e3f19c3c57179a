"""Built-in embedders: torch (transformers) and OpenVINO.

They are registered here and built by the core (``hwkit.jobs.load_embedder``), which plans
the device and dtype. Importing this package is cheap: torch, transformers and openvino
are imported when an embedder is built, not here, so ``hwkit --help`` and plugin loading
stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import hookimpl

if TYPE_CHECKING:
    from hwkit.embedder import Embedder
    from hwkit.hookspecs import Register

__all__ = ["hwkit_register_embedders"]


@hookimpl
def hwkit_register_embedders(register: Register[type[Embedder]]) -> None:
    from hwkit.plugins.embedders.openvino_embedder import OpenVINOEmbedder
    from hwkit.plugins.embedders.torch_embedder import TorchEmbedder

    register(TorchEmbedder)
    register(OpenVINOEmbedder)
