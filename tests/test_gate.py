from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.errors import NotFound
from proxy.gate import Gate, GateConfig, Ticket
from proxy.kvhints.pool import EnginePool
from proxy.policies.base import Priority
from proxy.records import Call, Program


class LevelPolicy:
    """Ranks a call by the level the test wrote on it (a stand-in for a real policy)."""

    name = "level"
    live_ok = True

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(call.level, call.arrival)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(call.level, call.arrival)

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(call.level, call.arrival)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        pass


async def settle() -> None:
    """Let the loop run what is ready: a release hands its slot on once the releasing task
    yields, and the granted waiter resumes one turn later."""
    for _ in range(3):
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _gate(max_inflight: int | None = 1, **config: Any) -> tuple[Gate, Clock]:
    engine = EngineConfig(name="e", url="http://e", models=["m"], max_inflight=max_inflight)
    clock = Clock()
    return Gate(
        EnginePool([make_backend(engine)]), LevelPolicy(), GateConfig(**config), clock
    ), clock


def _ticket(name: str, level: int, arrival: float = 0.0, model: str = "m") -> Ticket:
    call = Call(id=name, program_id="p-" + name, arrival=arrival, level=level)
    return Ticket(call=call, program=Program(id="p-" + name, created=0.0), model=model)


async def test_free_slot_is_granted_at_once_and_without_cap_nothing_waits() -> None:
    gate, _ = _gate(max_inflight=None)
    tickets = [_ticket(str(i), 5) for i in range(50)]
    engines = [await gate.acquire(t) for t in tickets]
    assert {e.name for e in engines} == {"e"}
    assert gate.waiting == []


async def test_release_order_follows_priority_not_arrival() -> None:
    gate, _ = _gate(max_inflight=1, preempt=False)
    holder = _ticket("holder", 9)
    await gate.acquire(holder)
    order: list[str] = []

    async def wait(t: Ticket) -> None:
        await gate.acquire(t)
        order.append(t.call.id)

    tickets = [
        _ticket("b", 2, 1.0),
        _ticket("c", 0, 2.0),
        _ticket("d", 1, 3.0),
        _ticket("e", 0, 4.0),
    ]
    tasks = [asyncio.create_task(wait(t)) for t in tickets]
    await settle()
    assert len(gate.waiting) == 4
    current = holder
    for _ in tickets:
        gate.release(current)
        await settle()
        current = next(t for t in tickets if t.call.id == order[-1])
    await asyncio.gather(*tasks)
    assert order == ["c", "e", "d", "b"]  # level first, arrival inside a level


async def test_priorities_are_read_again_when_a_slot_frees() -> None:
    gate, _ = _gate(max_inflight=1, preempt=False)
    holder = _ticket("holder", 0)
    await gate.acquire(holder)
    low, high = _ticket("low", 3, 1.0), _ticket("high", 1, 2.0)
    waits = [asyncio.create_task(gate.acquire(t)) for t in (low, high)]
    await settle()
    low.call.level = 0  # e.g. promoted by anti-starvation while it waited
    gate.release(holder)
    await settle()
    assert waits[0].done()
    assert not waits[1].done()
    waits[1].cancel()


async def test_cancelled_wait_leaves_the_queue() -> None:
    gate, _ = _gate(max_inflight=1)
    await gate.acquire(_ticket("holder", 0))
    waiter = asyncio.create_task(gate.acquire(_ticket("w", 0)))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == []


async def test_newcomer_does_not_jump_a_better_waiting_call() -> None:
    gate, _ = _gate(max_inflight=2, preempt=False)
    a = _ticket("a", 0)
    await gate.acquire(a)
    await gate.acquire(_ticket("b", 0))
    best = asyncio.create_task(gate.acquire(_ticket("best", 0, 1.0)))
    await settle()
    gate.release(a)  # one slot frees: it goes to the waiting call, not to a newcomer
    await settle()
    assert best.done()
    late = asyncio.create_task(gate.acquire(_ticket("late", 5, 2.0)))
    await settle()
    assert not late.done()
    late.cancel()


async def test_unknown_model_fails_fast() -> None:
    gate, _ = _gate()
    with pytest.raises(NotFound):
        await gate.acquire(_ticket("x", 0, model="nope"))


async def test_waiting_call_preempts_a_worse_running_one_after_its_quantum() -> None:
    gate, clock = _gate(max_inflight=1, preempt=True, preempt_margin=2, min_quantum_s=1.0)
    running = _ticket("running", 3)
    running.preemptible = True
    cut: list[str] = []
    await gate.acquire(running)
    running.on_preempt = lambda: cut.append("running")
    clock.now = 0.5
    early = asyncio.create_task(gate.acquire(_ticket("early", 0, 0.5)))
    await settle()
    assert cut == []  # within its quantum: not preempted yet
    early.cancel()
    clock.now = 2.0
    near = asyncio.create_task(gate.acquire(_ticket("near", 2, 2.0)))
    await settle()
    assert cut == []  # outranks it by 1 level only; the margin is 2
    near.cancel()
    urgent = asyncio.create_task(gate.acquire(_ticket("urgent", 0, 2.0)))
    await settle()
    assert cut == ["running"]
    assert gate.preemptions == 1
    gate.release(running)  # the owner gives the slot back
    await settle()
    assert urgent.done()


async def test_demotion_of_a_running_call_triggers_preemption() -> None:
    gate, _ = _gate(max_inflight=1, preempt=True, min_quantum_s=0.0)
    running = _ticket("running", 0)
    running.preemptible = True
    await gate.acquire(running)
    cut: list[bool] = []
    running.on_preempt = lambda: cut.append(True)
    waiter = asyncio.create_task(gate.acquire(_ticket("w", 1, 1.0)))
    await settle()
    assert cut == []  # the waiting call is worse
    running.call.level = 4
    gate.reprioritized(running, Priority(4, 0.0))
    assert cut == [True]
    waiter.cancel()


async def test_victim_is_the_worst_preemptible_running_call_past_its_quantum() -> None:
    gate, clock = _gate(max_inflight=3, preempt=True, min_quantum_s=1.0)
    cut: list[str] = []
    for name, level, preemptible in (("a", 2, True), ("b", 5, False), ("c", 4, True)):
        t = _ticket(name, level)
        t.preemptible = preemptible
        await gate.acquire(t)
        t.on_preempt = lambda name=name: cut.append(name)  # type: ignore[misc]
    clock.now = 0.5
    early = asyncio.create_task(gate.acquire(_ticket("early", 0, 0.5)))
    await settle()
    assert cut == []  # nobody has had the quantum yet
    early.cancel()
    clock.now = 10.0
    urgent = asyncio.create_task(gate.acquire(_ticket("urgent", 0, 10.0)))
    await settle()
    assert cut == ["c"]  # b is worse but not preemptible
    urgent.cancel()


async def test_waiters_that_left_before_their_grant_take_no_slot_with_them() -> None:
    gate, _ = _gate(max_inflight=16, preempt=False)
    holders = [_ticket(f"h{i}", 0) for i in range(16)]
    for holder in holders:
        await gate.acquire(holder)
    waiters = [asyncio.create_task(gate.acquire(_ticket(f"w{i}", 0, 1.0))) for i in range(64)]
    await settle()
    assert gate.queued == 64
    for waiter in waiters:  # every client goes away at once...
        waiter.cancel()
    for holder in holders:  # ...and the slots free before their handlers have run
        gate.release(holder)
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert gate.running("e") == 0
    assert gate.queued == 0
    late = asyncio.create_task(gate.acquire(_ticket("late", 0, 2.0)))
    await settle()
    assert late.done()
    assert late.result().name == "e"
