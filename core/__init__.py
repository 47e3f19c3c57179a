"""hwkit: fine-tune, embed, retrieve, export and serve language models on the hardware you have.

The top level stays light: importing ``hwkit`` never imports torch, transformers or openvino.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
