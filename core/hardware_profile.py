"""Hardware profiles: TOML data validated by pydantic, and the choice of the active one.

Selection order: ``HWKIT_PROFILE`` (a registered name or a path to a TOML file), else the
profile matching the detected device, else a generic profile derived from detection. A
profile may name hardware that is not present: that is planning for a machine you do not
have, and ``ActiveProfile.present`` says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwkit.errors import ConfigError, NotFoundError, UnknownNameError

if TYPE_CHECKING:
    from hwkit.device import Capabilities, Device, MemoryTraits
    from hwkit.registry import Registry

PROFILE_ENV = "HWKIT_PROFILE"
GB = 1_000_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MatchRules(_Strict):
    """Which detected devices this profile describes."""

    kind: str
    name_patterns: list[str] = Field(default_factory=list, description="regexes, case-insensitive")

    @field_validator("name_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return patterns


class MemorySpec(_Strict):
    capacity_gb: float | None = Field(None, gt=0, description="device memory, decimal GB")
    shared_with_host: bool = False
    budget_fraction: float = Field(0.9, gt=0, le=1, description="share hwkit may plan with")
    bandwidth_gbps: float | None = Field(None, gt=0)
    runtime_overhead_gb: float = Field(
        1.073741824, ge=0, description="held before any model: driver context, workspaces"
    )
    fragmentation: float = Field(0.0, ge=0, lt=1, description="caching allocator's share lost")
    heap_retention: float = Field(0.0, ge=0, le=2, description="freed activations kept mapped")

    def traits(self) -> MemoryTraits:
        from hwkit.device import MemoryTraits

        return MemoryTraits(
            runtime_overhead=int(self.runtime_overhead_gb * GB),
            fragmentation=self.fragmentation,
            heap_retention=self.heap_retention,
        )


class ComputeSpec(_Strict):
    native_dtypes: list[str]
    emulated_dtypes: list[str] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    compute_capability: str | None = None
    can_train: bool = True
    quantization: list[str] = Field(
        default_factory=list, description="weight-quantisation kernels: nf4, int8 (bitsandbytes)"
    )
    attention: list[str] = Field(
        default_factory=lambda: ["sdpa", "eager"], description="attention implementations"
    )
    runtimes: list[str] = Field(
        default_factory=lambda: ["transformers"], description="inference runtimes it runs"
    )

    def capabilities(self, *, shared_memory: bool) -> Capabilities:
        """What a device described by this profile can run (for devices not detected here)."""
        from hwkit.device import Capabilities

        return Capabilities(
            dtypes=tuple(self.native_dtypes),
            features=tuple(self.features),
            can_train=self.can_train,
            shared_memory=shared_memory,
            compute_capability=self.compute_capability,
            quantization=tuple(self.quantization),
            attention=tuple(self.attention),
            runtimes=tuple(self.runtimes),
        )


class Throughput(_Strict):
    metric: str = Field(description="e.g. bf16_dense_tflops, int8_tops")
    value: float = Field(gt=0)
    source: str


class TrainingDefaults(_Strict):
    dtype: str = "float32"
    attention: str = "sdpa"
    lora_rank: int = Field(16, ge=1)
    max_seq_len: int = Field(2048, ge=16)
    quantization: Literal["none", "int8", "nf4"] = "none"


WeightFormat = Literal["none", "nf4", "int8", "int4"]


class InferenceDefaults(_Strict):
    """How a practitioner runs models here, where it differs from what the planner derives.

    Unset fields follow the device: the best native 16-bit dtype, the training section's
    attention, unquantised weights first, then the device's weight kernels. ``weights``
    (generation) and ``encoder_weights`` (embedding, reranking) are tried in order for the
    device's first runtime, e.g. an NPU's INT8 then INT4 through OpenVINO.
    """

    dtype: str | None = None
    attention: str | None = None
    weights: list[WeightFormat] | None = None
    encoder_weights: list[WeightFormat] | None = None


class ThermalSpec(_Strict):
    max_temp_c: float | None = None
    tdp_w: float | None = None


class HardwareProfile(_Strict):
    """One kind of hardware as hwkit plans for it. Every figure carries its source."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    display_name: str
    vendor: str = ""
    source: str = Field(min_length=1, description="where the figures come from")
    notes: str = ""
    match: MatchRules
    memory: MemorySpec
    compute: ComputeSpec
    throughput: list[Throughput] = Field(default_factory=list)
    training: TrainingDefaults = Field(default_factory=TrainingDefaults)
    inference: InferenceDefaults = Field(default_factory=InferenceDefaults)
    thermal: ThermalSpec = Field(default_factory=ThermalSpec)
    generic: bool = Field(False, description="derived from detection, not from a file")
    path: str | None = Field(None, description="file it was loaded from")

    @property
    def kind(self) -> str:
        return self.match.kind

    def matches(self, device: Device) -> bool:
        if device.kind != self.match.kind:
            return False
        if not self.match.name_patterns:
            return True
        return any(re.search(p, device.name, re.IGNORECASE) for p in self.match.name_patterns)

    def capacity_bytes(self, host_total: int | None = None) -> int:
        """Memory this hardware has; shared-memory devices use the host's total."""
        if self.memory.capacity_gb is not None:
            return int(self.memory.capacity_gb * GB)
        if self.memory.shared_with_host and host_total:
            return host_total
        raise ConfigError(
            f"profile {self.name!r} has no memory figure",
            hint="set [memory] capacity_gb, or shared_with_host = true for host memory",
        )

    def budget_bytes(self, host_total: int | None = None) -> int:
        return int(self.capacity_bytes(host_total) * self.memory.budget_fraction)


def _field_path(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc)


def parse_profile(data: Mapping[str, Any], *, origin: str) -> HardwareProfile:
    """Validate a profile mapping; errors name ``origin`` and the first bad field."""
    try:
        return HardwareProfile.model_validate({**data, "path": data.get("path", origin)})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(err["loc"]) or "(top level)"
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(
            f"{origin}: field {field!r}: {err['msg']}{more}",
            hint="see docs/profiles.md for the schema",
        ) from None


def load_profile(path: Path) -> HardwareProfile:
    """Read and validate one profile TOML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"profile file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profile: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_profile(data, origin=str(path))


def generic_profile(device: Device) -> HardwareProfile:
    """A profile built from what detection reports, for hardware no file describes."""
    caps = device.capabilities
    mem = device.memory()
    dtype = next((d for d in ("bfloat16", "float16") if caps.supports(d)), "float32")
    return HardwareProfile(
        name=f"generic-{device.kind}",
        display_name=device.name,
        source="derived from detection at run time",
        match=MatchRules(kind=device.kind, name_patterns=[re.escape(device.name)]),
        memory=MemorySpec(
            capacity_gb=None if caps.shared_memory else mem.total / GB,
            shared_with_host=caps.shared_memory,
            budget_fraction=0.7 if caps.shared_memory else 0.9,
        ),
        compute=ComputeSpec(
            native_dtypes=list(caps.dtypes),
            features=list(caps.features),
            compute_capability=caps.compute_capability,
            can_train=caps.can_train,
            quantization=list(caps.quantization),
            attention=list(caps.attention),
            runtimes=list(caps.runtimes),
        ),
        training=TrainingDefaults(dtype=dtype if caps.can_train else "float16"),
        generic=True,
    )


@dataclass(frozen=True)
class ActiveProfile:
    """The chosen profile, why it was chosen, and whether its hardware is here."""

    profile: HardwareProfile
    reason: str
    source: Literal["env", "match", "generic"]
    present: bool
    device_id: str | None = None


def _looks_like_path(value: str) -> bool:
    return value.endswith(".toml") or os.sep in value or "/" in value


def profile_for(device: Device, profiles: Registry[HardwareProfile]) -> HardwareProfile:
    """The registered profile that matches ``device``, or a generic one.

    Among several matches the one with the most specific (longest) pattern wins, so a
    catch-all ``cpu`` profile never shadows a named one.
    """
    matches = [p for _, p in profiles.items() if p.matches(device)]
    if not matches:
        return generic_profile(device)
    return max(matches, key=lambda p: max((len(x) for x in p.match.name_patterns), default=0))


def _device_rank(
    device: Device, profile: HardwareProfile, host_total: int | None
) -> tuple[int, int]:
    try:
        budget = profile.budget_bytes(host_total)
    except ConfigError:
        budget = 0
    return (1 if profile.compute.can_train and not profile.memory.shared_with_host else 0, budget)


def select_profile(
    profiles: Registry[HardwareProfile],
    devices: list[Device],
    env: Mapping[str, str] | None = None,
    host_total: int | None = None,
) -> ActiveProfile:
    """Choose the active profile (see module docstring for the order)."""
    env = os.environ if env is None else env
    wanted = env.get(PROFILE_ENV, "").strip()
    if wanted:
        if _looks_like_path(wanted) or (wanted not in profiles and Path(wanted).is_file()):
            profile = load_profile(Path(wanted).expanduser())
            origin = f"{PROFILE_ENV}={wanted} (file)"
        else:
            try:
                profile = profiles.get(wanted)
            except UnknownNameError as exc:
                raise UnknownNameError(
                    f"hardware profile ({PROFILE_ENV})", wanted, exc.known
                ) from None
            origin = f"{PROFILE_ENV}={wanted}"
        device = next((d for d in devices if profile.matches(d)), None)
        present = device is not None
        suffix = "" if present else "; no such device here: planning for hardware not present"
        return ActiveProfile(
            profile, origin + suffix, "env", present, device.id if device else None
        )
    if not devices:
        raise NotFoundError("no device detected, not even the CPU", hint="run `hwkit doctor`")
    pairs = [(d, profile_for(d, profiles)) for d in devices]
    device, profile = max(pairs, key=lambda pair: _device_rank(pair[0], pair[1], host_total))
    if profile.generic:
        return ActiveProfile(
            profile,
            f"no profile matches {device.name!r}; derived from detection",
            "generic",
            True,
            device.id,
        )
    return ActiveProfile(
        profile, f"matches detected device {device.id} ({device.name})", "match", True, device.id
    )
