"""The live gate under a tenant floor: a running call's service moves its tenant's floor, so
the tenant's waiting calls are ranked again even when the running call's own priority stays
(the decision then matches a full re-rank of every waiting call)."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.gate import Gate, GateConfig, Ticket
from proxy.kvhints.pool import EnginePool
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program
from tests.test_gate import Clock, settle


async def test_a_served_call_reranks_its_tenants_waiting_calls_though_its_own_rank_stays() -> None:
    floor = TenantFloorConfig(share=1.0, half_life_s=None)
    policy = PLAS(PLASConfig(levels=4, first=1.0, growth=2.0, beta=None, tenant_floor=floor))
    engine = EngineConfig(name="e", url="http://e", models=["m"], max_inflight=1)
    clock = Clock()
    gate = Gate(EnginePool([make_backend(engine)]), policy, GateConfig(preempt=False), clock)
    tickets: dict[str, Ticket] = {}
    waits = []
    for name, tenant, service, at in (("r", "a", 10.0, 0.0), ("w", "a", 0.0, 1.0),
                                      ("x", "b", 0.0, 2.0)):  # fmt: skip
        clock.now = at
        program = Program(id="p-" + name, created=at, tenant=tenant, service=service)
        call = Call(id=name, program_id=program.id, arrival=at, queued_since=at)
        program.active[call.id] = call
        policy.on_arrival(call=call, program=program, now=at)
        ticket = tickets[name] = Ticket(call=call, program=program, model="m")
        waits.append(asyncio.ensure_future(gate.acquire(ticket)))
    await settle()
    assert tickets["r"].engine is not None  # r runs (last level); w, then x, wait at level 0
    assert [t.call.id for t in gate.waiting] == ["w", "x"]
    # r is served 1.5: still the last level, but tenant a's floor is 1.5 now, so w drops.
    r = tickets["r"]
    r.call.service = 1.5
    clock.now = 3.0
    rank = policy.on_service(call=r.call, program=r.program, now=clock.now)
    assert rank == r.priority
    gate.reprioritized(r, rank)
    gate.release(r)
    await settle()
    assert tickets["x"].engine is not None  # x (level 0) before w (level 1 now)
    assert tickets["w"].engine is None
    for wait in waits:
        wait.cancel()
        with suppress(asyncio.CancelledError):
            await wait
