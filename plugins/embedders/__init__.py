"""Built-in embedders: torch (transformers) and OpenVINO.

Importing this package is cheap: torch, transformers and openvino are imported when an
embedder is built, not here, so ``hwkit --help`` and plugin loading stay fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from hwkit.hookspecs import hookimpl
from hwkit.plugins.embedders.model_config import default_model_path, resolve_model_path

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.embedder import Embedder

__all__ = ["default_model_path", "embedder_classes", "load_embedder", "resolve_model_path"]


def embedder_classes() -> dict[str, type[Embedder]]:
    """Name -> class of the built-in embedders (imports their modules)."""
    from hwkit.plugins.embedders.openvino_embedder import OpenVINOEmbedder
    from hwkit.plugins.embedders.torch_embedder import TorchEmbedder

    return {TorchEmbedder.name: TorchEmbedder, OpenVINOEmbedder.name: OpenVINOEmbedder}


def load_embedder(
    name: str = "torch",
    model: str | os.PathLike[str] | None = None,
    device: Device | str | None = None,
    **options: Any,
) -> Embedder:
    """Build the embedder registered as ``name`` (built-in or a third party's plugin).

    ``model`` is a local directory (or a hub name already in the local cache); None is
    all-MiniLM-L6-v2. ``options`` go to the embedder's constructor.
    """
    builtins = embedder_classes()
    if name in builtins:
        cls: Any = builtins[name]
    else:
        from hwkit.plugin_manager import load_plugins

        cls = load_plugins().embedders.get(name)  # UnknownNameError lists what is registered
    if device is not None:
        options["device"] = device
    return cls(model=model, **options)


@hookimpl
def hwkit_register_embedders(register: Any) -> None:
    for cls in embedder_classes().values():
        register(cls)
