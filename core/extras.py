"""Optional dependencies in one place: which extra brings a module, and the error that says so.

As Accelerate's ``utils/imports.py`` does, availability is checked with
``importlib.util.find_spec`` (no import), and a missing module becomes one line naming the
``pip install 'hwkit[EXTRA]'`` that brings it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from hwkit.errors import UnavailableError

# import name -> the hwkit extra that installs it
EXTRAS: dict[str, str] = {
    "bm25s": "retrieval",
    "Stemmer": "retrieval",
    "ranx": "retrieval",
    "faiss": "retrieval",
    "sentence_transformers": "retrieval",
    "pymilvus": "milvus",
    "milvus_lite": "milvus",
    "nncf": "nncf",
    "sqlalchemy": "data",
    "psycopg": "data",
    "datasketch": "data",
    "networkx": "data",
    "jsonschema": "rewards",
    "gguf": "export",
    "llama_cpp": "export",
    "openvino_genai": "export",
    "openvino_tokenizers": "export",
    "fastapi": "serve",
    "uvicorn": "serve",
    "anyio": "serve",
    "openai": "serve",
    "matplotlib": "plot",
    "bitsandbytes": "qlora",
    "intel_extension_for_pytorch": "ipex",
}


def install_hint(module: str) -> str:
    """The command that installs ``module`` (its hwkit extra where it has one)."""
    top = module.split(".", 1)[0]
    extra = EXTRAS.get(top)
    return f"pip install 'hwkit[{extra}]'" if extra else f"pip install {top.replace('_', '-')}"


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise UnavailableError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f"{purpose} needs {module}" if purpose else f"{module} is not installed"
        raise UnavailableError(f"{what} ({exc})", hint=install_hint(module)) from None
