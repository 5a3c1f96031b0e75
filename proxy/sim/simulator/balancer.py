"""Which engine a call goes to when several serve the same model, in the simulator: the live
proxy's own balancer objects (``proxy.kvhints.balancers``: round-robin, least-loaded,
autellix, prefix-aware, plug-ins), given the simulated engines' load.

What a balancer sees of each engine comes from the engine model (running and waiting
requests, KV in use) and, for ``cached``, from the simulator's prefix cache: the blocks of
the call's shared context that engine still holds. The call's affinity is its program's
``Program.engine``, the engine of its previous call, as the live proxy's process table keeps
it.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.kvhints.balancers import AUTELLIX_THRESHOLD, Balancer, BalancerRegistry, Tuning
from proxy.kvhints.load import EngineLoad
from proxy.sim.simulator.bookkeeping import EngineSlot

__all__ = ["AUTELLIX_THRESHOLD", "Balancer", "engine_loads", "make_balancer"]


def make_balancer(ref: str, tuning: Tuning | None = None) -> Balancer:
    """A balancer by name, ``package.module:Class`` or entry point, as the proxy finds it."""
    return BalancerRegistry().create(ref, tuning)


def engine_loads(engines: Sequence[EngineSlot], cached: Sequence[int]) -> list[EngineLoad]:
    """Each engine's load as a balancer reads it; ``cached``: blocks of the call's context
    each engine holds."""
    return [
        EngineLoad(e.model.num_running, e.model.num_waiting, e.model.kv_usage, str(e.index), c)
        for e, c in zip(engines, cached, strict=True)
    ]
