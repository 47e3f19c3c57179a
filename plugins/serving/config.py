"""What ``hwkit serve`` takes, and the checks made before anything listens or loads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hwkit.errors import UsageError

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_ENV = "HWKIT_SERVE_TOKEN"

Dtype = Literal["float32", "bfloat16", "float16"]


class ServeConfig(BaseModel):
    """Everything ``hwkit serve`` takes; the CLI flags map one to one."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(
        description="served name -> model name, HF dir, run dir, .gguf file or OpenVINO IR dir"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = None
    memory_budget: int | None = Field(
        None,
        gt=0,
        description="cap on the planned bytes of the models loaded on each device "
        "(None: only each device's own plan budget)",
    )
    dtype: Dtype | None = Field(None, description="overrides each plan's dtype (None: the plan's)")
    session_messages: int = Field(10, ge=1)
    max_queue: int = Field(8, ge=1, description="requests queued or running; 429 beyond")
    workers: int = Field(
        1,
        ge=1,
        description="generations running at once on models that decode one sequence at a "
        "time (a batching model takes up to its planned batch together)",
    )
    batch: int = Field(
        8,
        ge=1,
        description="concurrent sequences per model: each model's plan makes room for this "
        "many, and a batching runtime decodes up to the plan's micro-batch together",
    )
    context: int | None = Field(
        None, ge=16, description="tokens per sequence, prompt and reply (None: 4096 or less)"
    )
    runtimes: tuple[str, ...] = Field(
        (), description="inference runtimes to use, in order (empty: those that load the model)"
    )
    max_request_bytes: int = Field(64 * 1024, ge=256)
    max_messages: int = Field(64, ge=1)
    max_tokens_limit: int = Field(512, ge=1, description="largest max_tokens accepted")
    default_max_tokens: int = Field(128, ge=1)
    personas_file: Path | None = None
    default_persona: str | None = None
    rag: dict[str, Path] = Field(
        default_factory=dict, description="served name -> index directory it answers from"
    )
    rag_k: int = Field(3, ge=1, le=20, description="passages per answer for RAG models")


def check_bind(config: ServeConfig) -> None:
    """Refuse to listen beyond localhost without a token."""
    if config.host not in LOCAL_HOSTS and not config.token:
        raise UsageError(
            f"refusing to bind {config.host} without a bearer token",
            hint=f"pass --token or set {TOKEN_ENV}, or bind 127.0.0.1",
        )


_UNITS = {
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "K": 2**10,
    "M": 2**20,
    "G": 2**30,
    "B": 1,
}


def parse_size(text: str | int) -> int:
    """``"600MB"``, ``"2GiB"``, ``"1.5G"`` or a byte count to bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    try:
        for unit, mult in _UNITS.items():
            if s.endswith(unit):
                return int(float(s[: -len(unit)]) * mult)
        return int(float(s))
    except ValueError:
        raise UsageError(
            f"size {text!r} is not a number of bytes", hint="write e.g. 600MB, 2GiB or 1.5G"
        ) from None
