"""The Exporter contract: a trained run or a model to a deployable artefact, verified.

``export`` writes under a temporary name, checks the result against the source (top-1
agreement, a load in the target runtime) and renames it into place only when it passes;
it returns the artefact's path and leaves its figures in ``export.json`` beside it.
``options_model`` declares the options the exporter takes, so the ``hwkit export`` command
can pass any registered exporter what the user asked for and refuse what it does not take.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ExportOptions(BaseModel):
    """Options every exporter takes; an exporter's own model subclasses it."""

    model_config = ConfigDict(extra="forbid")

    verify: bool = True


class Exporter(ABC):
    """Writes an export under a temporary name and renames it into place when verified."""

    name: ClassVar[str]  # "merged", "gguf", "ollama", "openvino", or a plugin's own
    description: ClassVar[str] = ""
    options_model: ClassVar[type[ExportOptions]] = ExportOptions

    @abstractmethod
    def export(self, source: Path, output: Path, **options: Any) -> Path:
        """Export ``source`` (a run directory, model directory or known name) to ``output``."""
