"""Built-in deploy targets: where a pipeline puts a model version in service.

``ollama`` (``ollama create`` with the previous version kept as ``NAME:prev``) and ``serve``
(a running ``hwkit serve`` that follows the registry's champion); a third party adds its
own through the same hook (docs/deploy.md). The target modules are imported when the
registry is filled, not when hwkit starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwkit.hookspecs import Register, hookimpl

if TYPE_CHECKING:
    from hwkit.deploy import DeployTarget


@hookimpl
def hwkit_register_deploy_targets(register: Register[type[DeployTarget]]) -> None:
    from hwkit.plugins.deploy.ollama import OllamaTarget
    from hwkit.plugins.deploy.serve_target import ServeTarget

    register(OllamaTarget)
    register(ServeTarget)
