"""Content hashes: one sha256 for a file and one for the set of files that define a model.

Every place that asks "is this the same file / the same model?" uses these: index
checksums, the fingerprint an index records of its embedding model, OpenVINO IR cache keys.
A file's digest is memoised per (path, size, mtime), so a process hashes a model once.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

# Files whose bytes define what a model computes: weights, architecture, tokenizer, pooling.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model", ".gguf")
# Folders inside a model directory that hold derived or training state, not the model.
DERIVED_FOLDERS = frozenset({"checkpoints", "onnx", "openvino"})
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """sha256 of one file's bytes (hex)."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def text_digest(text: str) -> str:
    """sha256 of a string (hex): cache keys built from JSON payloads."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_files(root: Path) -> list[Path]:
    """The files that define a model, relative to ``root``, sorted; hidden files, READMEs
    and derived folders (checkpoints, onnx, openvino) are left out."""
    files = []
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root)
        if not file.is_file() or file.suffix not in MODEL_FILE_SUFFIXES:
            continue
        if any(part.startswith(".") for part in rel.parts) or file.name == "README.md":
            continue
        if rel.parts[0] in DERIVED_FOLDERS:
            continue
        files.append(rel)
    return files


def model_digest(model_dir: Path) -> str:
    """sha256 over the names, sizes and contents of a model's files (see model_files)."""
    root = Path(model_dir)
    h = hashlib.sha256()
    for rel in model_files(root):
        path = root / rel
        h.update(f"{rel.as_posix()}\0{path.stat().st_size}\0".encode())
        h.update(file_digest(path).encode())
    return h.hexdigest()
