"""Which embedder made an index's vectors, and getting one back when the index is loaded.

Vectors are only comparable with query vectors from the same model, so the manifest
records the embedder's name, model directory and a fingerprint of the model files;
loading with a different model is refused instead of returning silent nonsense.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwkit.embedder import Embedder
from hwkit.errors import ConfigError, NotFoundError

# Files that define what a model computes; READMEs and caches do not.
_MODEL_SUFFIXES = (".json", ".txt", ".model", ".safetensors", ".bin")
_FULL_HASH_LIMIT = 512 << 20  # bigger weight files: size + first and last 16 MiB


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over the model's config, tokenizer and weight files (names and contents)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    files = [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.suffix in _MODEL_SUFFIXES
        and not any(
            part.startswith(".") or part in ("openvino", "onnx")
            for part in p.relative_to(root).parts
        )
        and p.name != "README.md"
    ]
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\0".encode())
        with p.open("rb") as fh:
            if size <= _FULL_HASH_LIMIT:
                while block := fh.read(1 << 20):
                    h.update(block)
            else:
                h.update(fh.read(16 << 20))
                fh.seek(size - (16 << 20))
                h.update(fh.read())
    return h.hexdigest()


def embedder_identity(embedder: Embedder) -> dict[str, Any]:
    """JSON-ready identity of an embedder for the manifest."""
    model_path = getattr(embedder, "model_path", None)
    info: dict[str, Any] = {
        "name": getattr(embedder, "name", type(embedder).__name__),
        "dim": int(embedder.dim),
        "max_length": int(getattr(embedder, "max_length", 0) or 0),
        "model": str(model_path) if model_path is not None else None,
        "fingerprint": None,
    }
    if model_path is not None and Path(model_path).is_dir():
        info["fingerprint"] = model_fingerprint(Path(model_path))
    return info


def make_embedder(name: str = "torch", model: str | Path | None = None, **options: Any) -> Embedder:
    """An embedder from the built-in plugin (imported here: it pulls in torch/openvino)."""
    from hwkit.plugins.embedders import load_embedder

    return load_embedder(name, model=model, **options)


def int8_options(int8: str, docs: Sequence[Any] = ()) -> dict[str, Any]:
    """OpenVINO embedder options for ``int8``; full INT8 is calibrated on a seeded sample
    of the documents being indexed, embedded as the index embeds them (the corpus is the
    best calibration set; the same corpus gives the same IR cache key)."""
    options: dict[str, Any] = {"int8": int8}
    if int8 == "full" and docs:
        from hwkit.plugins.embedders.calibration import sample
        from hwkit.plugins.retrievers.documents import join_content

        options["calibration_texts"] = [join_content(d.title, d.text) for d in sample(docs)]
    return options


def check_compatible(recorded: dict[str, Any], embedder: Embedder, where: Path) -> None:
    """Refuse an embedder whose model differs from the one that made the vectors."""
    if int(embedder.dim) != int(recorded.get("dim", embedder.dim)):
        raise ConfigError(
            f"{where}: vectors have dimension {recorded.get('dim')}, "
            f"the embedder gives {embedder.dim}",
            hint="load with the model the index was built with, or rebuild",
        )
    expected = recorded.get("fingerprint")
    mine = embedder_identity(embedder).get("fingerprint")
    if expected and mine and expected != mine:
        raise ConfigError(
            f"{where}: index was built with model {recorded.get('model')} "
            f"(fingerprint {expected[:12]}…), the embedder's model differs ({mine[:12]}…)",
            hint="load with the same model directory, or rebuild the index",
        )


def embedder_for_index(
    recorded: dict[str, Any] | None,
    where: Path,
    embedder: Embedder | None = None,
    **options: Any,
) -> Embedder:
    """The given embedder (checked) or one rebuilt from the manifest's record."""
    if recorded is None:
        raise ConfigError(f"{where}: manifest has no embedder record", hint="rebuild the index")
    if embedder is None:
        model = recorded.get("model")
        if model and not Path(model).exists():
            raise NotFoundError(
                f"{where}: the index's embedding model {model} is not on this machine",
                hint="pass the same model directory (hwkit search --model PATH)",
            )
        embedder = make_embedder(
            options.pop("embedder_name", None) or recorded.get("name") or "torch", model, **options
        )
    check_compatible(recorded, embedder, where)
    return embedder
