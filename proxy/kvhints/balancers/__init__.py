"""Balancers: which engine a call goes to (see ``base`` for the contract)."""

from proxy.kvhints.balancers.autellix import AutellixBalancer
from proxy.kvhints.balancers.base import (
    AUTELLIX_THRESHOLD,
    Balancer,
    Decision,
    Route,
    Tuning,
    least_loaded,
)
from proxy.kvhints.balancers.prefix import PrefixAware
from proxy.kvhints.balancers.registry import BUILTIN, BalancerRegistry
from proxy.kvhints.balancers.simple import LeastLoaded, RoundRobin

__all__ = [
    "AUTELLIX_THRESHOLD",
    "BUILTIN",
    "AutellixBalancer",
    "Balancer",
    "BalancerRegistry",
    "Decision",
    "LeastLoaded",
    "PrefixAware",
    "RoundRobin",
    "Route",
    "Tuning",
    "least_loaded",
]
