"""The gate never leaves a waiting call behind: preemptions looked at again once a quantum ends
or a rank improves, waiters failed when no engine serves their model any more, no slot taken
back by the call that gave it up, and no grant lost to an error part-way through a dispatch."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.errors import ModelNotFound
from proxy.gate import Gate, GateConfig, Ticket
from proxy.kvhints.pool import EnginePool
from proxy.policies.base import Priority
from proxy.records import Call, CallState, Program
from tests.test_gate import Clock, LevelPolicy, settle


def gate_over(*engines: tuple[str, list[str], int], **config: float | bool) -> tuple[Gate, Clock]:
    clock = Clock()
    pool = EnginePool(
        [
            make_backend(EngineConfig(name=n, url=f"http://{n}", models=m, max_inflight=cap))
            for n, m, cap in engines
        ]
    )
    return Gate(pool, LevelPolicy(), GateConfig(**config), clock), clock  # type: ignore[arg-type]


def ticket(name: str, level: int, model: str = "m", arrival: float = 0.0) -> Ticket:
    call = Call(id=name, program_id="p-" + name, arrival=arrival, level=level, queued_since=0.0)
    return Ticket(call=call, program=Program(id="p-" + name, created=0.0), model=model)


async def test_a_preemption_blocked_by_the_quantum_happens_once_the_quantum_ends() -> None:
    gate, clock = gate_over(("e", ["m"], 1), min_quantum_s=0.05)
    running = ticket("running", 5)
    await gate.acquire(running)
    cuts: list[float] = []
    running.preemptible, running.on_preempt = True, lambda: cuts.append(clock.now)
    clock.now = 0.01  # inside the running call's quantum: not yet
    waiter = asyncio.create_task(gate.acquire(ticket("waiter", 0)))
    await settle()
    assert cuts == []
    clock.now = 1.0  # the quantum is over; nothing else happens: the gate's own timer looks again
    async with asyncio.timeout(5):
        while not cuts:  # noqa: ASYNC110 - the gate's timer, no event to wait on
            await asyncio.sleep(0.01)
    assert cuts == [1.0]
    waiter.cancel()


async def test_a_rank_that_improves_while_waiting_is_looked_at_again() -> None:
    gate, _ = gate_over(("e", ["m"], 1), min_quantum_s=0.0)
    running = ticket("running", 3)
    await gate.acquire(running)
    cuts: list[str] = []
    running.preemptible, running.on_preempt = True, lambda: cuts.append("running")
    waiting = ticket("waiting", 3)
    task = asyncio.create_task(gate.acquire(waiting))
    await settle()
    assert cuts == []  # same level: FCFS
    waiting.call.level = 0  # its program's records changed (a sibling finished)
    gate.program_changed(waiting.program)
    assert cuts == ["running"]
    task.cancel()


async def test_a_waiter_for_a_model_no_engine_serves_any_more_fails() -> None:
    gate, _ = gate_over(("e", ["m"], 1), preempt=False)
    holder = ticket("holder", 1)
    await gate.acquire(holder)
    waiter = asyncio.create_task(gate.acquire(ticket("waiter", 1)))
    await settle()
    gate.pool.engines["e"].models = frozenset({"other"})  # a poll: m unloaded, engine healthy
    gate.dispatch()  # what the poller does after each refresh
    with pytest.raises(ModelNotFound):  # the pool's own error, not a wait without end
        await asyncio.wait_for(waiter, 5)


async def test_a_preempted_call_does_not_take_back_the_slot_it_gave_up() -> None:
    gate, clock = gate_over(("e", ["a", "b"], 1), min_quantum_s=0.5)
    victim = ticket("victim", 5, model="a")
    await gate.acquire(victim)
    cut = asyncio.Event()
    victim.preemptible, victim.on_preempt = True, cut.set
    clock.now = 1.0
    beneficiary = asyncio.create_task(gate.acquire(ticket("beneficiary", 0, model="b")))
    await settle()
    assert cut.is_set()
    gate.release(victim)  # its owner gives the slot back and asks again in the same step
    again = gate.acquire(victim)
    with contextlib.suppress(StopIteration):
        again.send(None)  # runs until it waits, or returns if it took the slot back
    took_it_back = victim.engine is not None
    await settle()
    assert not took_it_back
    assert beneficiary.done()
    again.close()


async def test_a_call_back_from_a_failed_attempt_waits_again_from_now() -> None:
    gate, clock = gate_over(("e", ["m"], 1), preempt=False)
    holder = ticket("holder", 0)
    await gate.acquire(holder)
    failed = ticket("failed", 1)
    failed.call.queued_since, failed.call.state = None, CallState.RUNNING  # its engine failed
    clock.now = 2.0
    task = asyncio.create_task(gate.acquire(failed))
    await settle()
    assert failed.call.queued_since == 2.0  # its wait counts, and anti-starvation sees it
    assert failed.call.state is CallState.QUEUED
    task.cancel()


class FailsWhenArmed(LevelPolicy):
    """Ranks like LevelPolicy (re-ranked in full before each decision), but once armed, its
    third answer raises: the dispatch's second decision fails after its first grant."""

    def __init__(self) -> None:
        self.left: int | None = None

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        if self.left is not None:
            self.left -= 1
            if self.left < 0:
                raise RuntimeError("policy failed")
        return Priority(call.level, call.arrival)


async def test_an_error_part_way_through_a_dispatch_loses_no_grant() -> None:
    clock, policy = Clock(), FailsWhenArmed()
    engine = EngineConfig(name="e", url="http://e", models=["m"], max_inflight=2)
    gate = Gate(EnginePool([make_backend(engine)]), policy, GateConfig(preempt=False), clock)
    holders = [ticket("h1", 0), ticket("h2", 0)]
    for holder in holders:
        await gate.acquire(holder)
    good, bad = ticket("good", 0, arrival=1.0), ticket("bad", 1, arrival=2.0)
    good_task = asyncio.create_task(gate.acquire(good))
    bad_task = asyncio.create_task(gate.acquire(bad))
    await settle()
    for holder in holders:
        assert holder.entry is not None
        gate.core.release(holder.entry)  # both slots free, no dispatch yet
    policy.left = 2  # the first decision ranks both waiters; the second one fails
    with pytest.raises(RuntimeError):
        gate.dispatch()
    await settle()
    assert good_task.done()  # granted before the error, and told so: no slot held for nobody
    assert good.engine is not None
    assert gate.running("e") == 1
    bad_task.cancel()
