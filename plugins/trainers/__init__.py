"""Built-in trainers, registered through the same ``hwkit`` entry point a third party uses.

Heavy libraries (torch, transformers, trl, peft) are imported inside the trainers' methods,
so loading the plugin (``hwkit plugins``, ``hwkit --help``) stays cheap.
"""

from __future__ import annotations

from hwkit.hookspecs import Register, hookimpl


@hookimpl
def hwkit_register_trainers(register: Register) -> None:
    from hwkit.plugins.trainers.dpo import DPOTrainerPlugin
    from hwkit.plugins.trainers.sft import SFTTrainerPlugin

    register(SFTTrainerPlugin)
    register(DPOTrainerPlugin)
