"""The Exporter contract: a trained run directory to a deployable artefact."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class Exporter(ABC):
    """Writes an export under a temporary name and renames it into place when verified."""

    name: str  # "merged", "gguf", "ollama", "openvino"

    @abstractmethod
    def export(self, source: Path, output: Path, **options: Any) -> Path: ...
