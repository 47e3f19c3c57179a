"""An example third-party hwkit backend: the ``emu`` emulated accelerator."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from hwkit.device import Backend, BackendStatus, Capabilities, Device, MemorySnapshot
from hwkit.hookspecs import hookimpl

CAPACITY = 2 * 1_000_000_000  # the emulated device's memory, bytes


class EmuDevice(Device):
    """Runs torch work on the host CPU; reports a fixed 2 GB of memory."""

    kind = "emu"

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.name = "Example Emulated Accelerator"
        self._allocated = 0

    @property
    def capabilities(self) -> Capabilities:
        # The emulator ships 8-bit weight kernels: the allocator may plan int8 weights here
        # (it reads capabilities, never backend names).
        return Capabilities(
            dtypes=("float32",),
            features=("emulated",),
            shared_memory=True,
            quantization=("int8",),
            runtimes=("transformers",),
        )

    def memory(self) -> MemorySnapshot:
        return MemorySnapshot(
            total=CAPACITY, free=CAPACITY - self._allocated, used_by_us=self._allocated
        )

    def torch_device(self) -> Any:
        import torch

        return torch.device("cpu")

    def autocast(self, dtype: str | None) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # float32 only: nothing to cast


class EmuBackend(Backend):
    name = "emu"
    kind = "emu"

    def _detect(self) -> tuple[BackendStatus, list[Device]]:
        if os.environ.get("HWKIT_EMU_DISABLE"):
            return BackendStatus(False, "disabled by HWKIT_EMU_DISABLE"), []
        return BackendStatus(True, details={"emulated": True}), [EmuDevice(0)]


@hookimpl
def hwkit_register_backends(register: Any) -> None:
    register(EmuBackend)


@hookimpl
def hwkit_register_profiles(register: Any) -> None:
    register(Path(__file__).with_name("emu.toml"))
