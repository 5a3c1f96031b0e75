"""Scheduling policies: the pure Policy contract, multi-level queues, the built-in policies
(FCFS, LAS, MLFQ, PLAS, ATLAS, SRPT), the tenant floor, and the registry that finds them.

See docs/policies.md for the guide to writing, configuring and testing a policy.
"""

from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import BasePolicy, NoConfig, Policy, Priority, live_wait
from proxy.policies.fcfs import FCFS
from proxy.policies.las import LAS
from proxy.policies.levels import Levels, LevelsConfig, StarvationGuard
from proxy.policies.mlfq import MLFQ
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.registry import BUILTIN, ENTRY_POINT_GROUP, PolicyRegistry
from proxy.policies.srpt import SRPT
from proxy.policies.tenant import TenantFloor, TenantFloorConfig

__all__ = [
    "ATLAS",
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "FCFS",
    "LAS",
    "MLFQ",
    "PLAS",
    "SRPT",
    "ATLASConfig",
    "BasePolicy",
    "Levels",
    "LevelsConfig",
    "NoConfig",
    "PLASConfig",
    "Policy",
    "PolicyRegistry",
    "Priority",
    "StarvationGuard",
    "TenantFloor",
    "TenantFloorConfig",
    "live_wait",
]
