"""The dynamic resource allocator: memory model, planner and run-time memory guard.

``plan(Job(...))`` picks device, dtype, quantisation, micro-batch, accumulation and
checkpointing that fit, with a reason for each; ``MemoryGuard`` keeps the run alive when
memory runs short, without changing the effective batch.
"""

from hwkit.allocator.budget import Budget, device_budget
from hwkit.allocator.guard import Decision, MemoryGuard
from hwkit.allocator.job import Job
from hwkit.allocator.memory import Settings, estimate
from hwkit.allocator.planner import Target, candidates, plan
from hwkit.allocator.spec import ModelSpec

__all__ = [
    "Budget",
    "Decision",
    "Job",
    "MemoryGuard",
    "ModelSpec",
    "Settings",
    "Target",
    "candidates",
    "device_budget",
    "estimate",
    "plan",
]
