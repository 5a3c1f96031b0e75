"""The gate mirrors the engines into the core on every decision: what a health poll or a
passive failure wrote on an engine counts at the next acquire, whether or not calls wait, and
an engine that queues calls itself holds newcomers back (``adaptive``)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.errors import ModelNotFound
from proxy.kvhints.load import EngineLoad
from tests.test_gate import settle
from tests.test_gate_liveness import gate_over, ticket


async def test_models_learnt_while_nothing_waits_count_at_the_next_acquire() -> None:
    gate, _ = gate_over(("e", ["m"], 4))
    first = ticket("first", 1)
    await gate.acquire(first)
    gate.release(first)
    gate.pool.engines["e"].models = frozenset({"m2"})  # a poll: m2 loaded, m unloaded
    engine = await asyncio.wait_for(gate.acquire(ticket("second", 1, model="m2")), 5)
    assert engine.name == "e"
    assert gate.core.engines["e"].models == frozenset({"m2"})


async def test_an_engine_back_from_an_ejection_takes_calls_again() -> None:
    gate, _ = gate_over(("e", ["m"], 4), ("f", ["m"], 4))
    gate.pool.engines["e"].healthy = False
    held = [ticket(f"c{i}", 1) for i in range(4)]
    for t in held:
        assert (await gate.acquire(t)).name == "f"
    gate.pool.engines["e"].healthy = True  # its health check passed again
    assert (await asyncio.wait_for(gate.acquire(ticket("next", 1)), 5)).name == "e"


async def test_a_waiter_is_failed_when_its_model_leaves_with_other_engines_healthy() -> None:
    gate, _ = gate_over(("e", ["m"], 1), ("f", ["other"], 1), preempt=False)
    await gate.acquire(ticket("holder", 1))
    waiter = asyncio.create_task(gate.acquire(ticket("waiter", 1)))
    await settle()
    gate.pool.engines["e"].models = frozenset({"x"})  # every engine healthy, none serves m
    gate.dispatch()
    with pytest.raises(ModelNotFound):
        await asyncio.wait_for(waiter, 5)


async def test_an_engine_with_its_own_queue_holds_newcomers_back_until_it_drains() -> None:
    gate, _ = gate_over(("e", ["m"], 8), adaptive=True, preempt=False)
    first = ticket("first", 1)
    await gate.acquire(first)
    engine = gate.pool.engines["e"]
    engine.load = EngineLoad(running=1, waiting=2)  # a poll: the engine queues calls itself
    newcomer = asyncio.create_task(gate.acquire(ticket("newcomer", 1)))
    await settle()
    assert not newcomer.done()  # a free slot, but the engine would only queue it
    engine.load = EngineLoad(running=1, waiting=0)
    gate.dispatch()  # what the poller does after each refresh
    assert (await asyncio.wait_for(newcomer, 5)).name == "e"
