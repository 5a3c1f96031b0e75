"""One mechanism, three users: the live gate (with the process table), the simulator's engine
queue and the vLLM plug-in's book, driven through the same random events, decide alike.

Each user is driven the way its own mechanism drives it (the gate through ``acquire`` /
``release`` with the table, the simulator's queue through ``push`` / ``pop`` / ``rerank``, the
plug-in through its book and ``PolicyQueue`` as vLLM calls it), on an engine of ``SLOTS``
sequence slots. After every event each fills its free slots. The test asserts that they admit
the same calls in the same order, keep the same program records (service, wait), and, for the
two slot-based preemption users (gate and plug-in), pick the same victim.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.backends.registry import make_backend
from proxy.backends.vllm_plugin.queue import CallBook, CallTags, PolicyQueue
from proxy.backends.vllm_plugin.victims import choose_victims
from proxy.config import EngineConfig
from proxy.core import lifecycle
from proxy.core.cost import ServiceCost
from proxy.gate import Gate, GateConfig, Ticket
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Policy, program_scalar
from proxy.policies.levels import Levels, LevelsConfig
from proxy.policies.mlfq import MLFQ
from proxy.policies.plas import PLAS, PLASConfig
from proxy.records import Call, Program
from proxy.sim.engine.engine import EngineRequest
from proxy.sim.simulator.policy_queue import PolicyQueue as SimQueue
from proxy.sim.simulator.policy_queue import Tracked as SimTracked
from proxy.table import ProcessTable, TableConfig

SLOTS = 2
PROMPT = 40
COST = ServiceCost(decode_token_s=0.25, prefill_token_s=0.01)
LEVELS: dict[str, Any] = {"levels": 5, "first": 1.0, "growth": 2.0, "beta": 0.5}


def make_policy(name: str) -> Policy:
    if name == "plas":
        return PLAS(PLASConfig(**LEVELS))
    if name == "atlas":
        return ATLAS(ATLASConfig(**LEVELS))
    return MLFQ(LevelsConfig(**LEVELS))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class GateUser:
    """The live proxy: process table + gate, as the request path drives them."""

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy, self.clock = policy, clock
        hook = lifecycle.policy_hook(policy)
        config = TableConfig(
            decode_token_s=COST.decode_token_s, prefill_token_s=COST.prefill_token_s
        )
        self.table = ProcessTable(config, on_finish=hook)
        engine = EngineConfig(name="e", url="http://e", models=["m"], max_inflight=SLOTS)
        rule = GateConfig(preempt=True, preempt_margin=1, min_quantum_s=0.0)
        self.gate = Gate(EnginePool([make_backend(engine)]), policy, rule, clock)
        self.tickets: dict[str, Ticket] = {}
        self.waits: dict[str, Coroutine[Any, Any, EngineState]] = {}
        self.names: dict[str, str] = {}  # the table's call id -> the test's name
        self.admitted: list[str] = []

    def arrive(self, program: str, name: str) -> None:
        now = self.clock()
        prog, call = self.table.begin(program, now=now, prompt_tokens=PROMPT)
        self.names[call.id] = name
        self.policy.on_arrival(call=call, program=prog, now=now)
        ticket = Ticket(call=call, program=prog, model="m")
        self.tickets[name] = ticket
        coro = self.gate.acquire(ticket)
        try:
            coro.send(None)
            self.waits[name] = coro
        except StopIteration:
            self._admitted(name)

    def _admitted(self, name: str) -> None:
        self.table.start(self.tickets[name].call, "e", self.clock())
        self.admitted.append(name)

    def fill(self) -> None:
        self.gate.dispatch()  # what the event loop runs once the releasing task yields
        for name, coro in list(self.waits.items()):
            if self.tickets[name].engine is not None:
                del self.waits[name]
                with suppress(StopIteration):
                    coro.send(None)
                self._admitted(name)

    def serve(self, name: str, tokens: int) -> None:
        ticket = self.tickets[name]
        now = self.clock()
        self.table.tokens(ticket.call, tokens, now)
        rank = self.policy.on_service(call=ticket.call, program=ticket.program, now=now)
        self.gate.reprioritized(ticket, rank)

    def finish(self, name: str) -> None:
        ticket = self.tickets[name]
        self.gate.release(ticket)
        self.table.finish(ticket.call, self.clock(), ok=True)
        self.gate.program_changed(ticket.program)

    def victim(self) -> str | None:
        best = self.gate.core.queue.peek(self.clock())
        if best is None:
            return None
        found, _ = self.gate.core.victim(best, self.clock(), lambda t: True)
        return None if found is None else self.names[found.call.id]

    def program(self, pid: str) -> Program | None:
        return self.table.get(pid)


class SimUser:
    """The simulator: its engine's policy queue, driven as the engine model and loop drive it."""

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy, self.clock = policy, clock
        self.queue = SimQueue(policy)
        self.hook = lifecycle.policy_hook(policy)
        self.programs: dict[str, Program] = {}
        self.running: dict[str, SimTracked] = {}
        self.output: dict[str, int] = {}
        self.admitted: list[str] = []

    def arrive(self, program: str, name: str) -> None:
        now = self.clock()
        prog = self.programs.setdefault(program, Program(id=program, created=now))
        call = Call(
            id=name, program_id=program, arrival=now, prompt_tokens=PROMPT, queued_since=now
        )
        prog.active[name] = call
        rank = self.policy.on_arrival(call=call, program=prog, now=now)
        request = EngineRequest(id=name, prompt_tokens=PROMPT, target_tokens=99, max_tokens=99)
        self.queue.track(request, call, prog, rank)
        self.queue.now = now
        self.queue.push(request)
        self.output[name] = 0

    def fill(self) -> None:
        self.queue.now = self.clock()
        while len(self.running) < SLOTS and len(self.queue):
            request = self.queue.pop()
            tracked = self.queue.get(request.id)
            assert tracked is not None
            self.running[request.id] = tracked
            self.admitted.append(request.id)

    def serve(self, name: str, tokens: int) -> None:
        self.output[name] += tokens
        now = self.clock()

        def refresh(tracked: SimTracked) -> bool:
            service = COST.of(prompt_tokens=PROMPT, output_tokens=self.output[tracked.call.id])
            grew = service != tracked.call.service
            tracked.call.service = service
            return grew

        running = [t.request for t in self.running.values() if t.call.id == name]
        self.queue.rerank(self.policy, now, running, refresh)

    def finish(self, name: str) -> None:
        tracked = self.running.pop(name)
        self.queue.forget(name)
        now = self.clock()
        lifecycle.closed(tracked.call, now, ok=True)
        lifecycle.finished(self.hook, tracked.call, tracked.program, now)
        self.queue.touch(tracked.program, now)

    def program(self, pid: str) -> Program | None:
        return self.programs.get(pid)


@dataclass(eq=False)
class VllmRequest:
    request_id: str
    num_output_tokens: int = 0
    priority: int = 0


class PluginUser:
    """The vLLM plug-in: its book and waiting queue, driven as the scheduler subclass does."""

    def __init__(self, policy: Policy, clock: Clock) -> None:
        self.policy, self.clock = policy, clock
        levels = Levels.from_config(LevelsConfig(**LEVELS))
        self.book = CallBook(policy=policy, levels=levels, cost=COST)
        self.waiting: PolicyQueue[VllmRequest] = PolicyQueue(self.book)
        self.requests: dict[str, VllmRequest] = {}
        self.running: list[str] = []
        self.admitted: list[str] = []
        self.scalars: dict[str, float] = {}  # what the proxy would send as the program's figure

    def arrive(self, program: str, name: str) -> None:
        now = self.clock()
        tags = CallTags(program=program, call=name, service=self.scalars.get(program, 0.0))
        self.book.arrive(request_id=name, tags=tags, prompt_tokens=PROMPT, arrival=now, now=now)
        request = self.requests[name] = VllmRequest(name)
        self.waiting.now = now
        self.waiting.add_request(request)

    def fill(self) -> None:
        self.waiting.now = self.clock()
        while len(self.running) < SLOTS and self.waiting:
            request = self.waiting.pop_request()
            self.book.admitted(request.request_id, output_tokens=0, now=self.clock())
            self.running.append(request.request_id)
            self.admitted.append(request.request_id)

    def serve(self, name: str, tokens: int) -> None:
        request = self.requests[name]
        request.num_output_tokens += tokens
        self.book.refresh(
            name, prompt_tokens=PROMPT, output_tokens=request.num_output_tokens, now=self.clock()
        )

    def finish(self, name: str) -> None:
        self.running.remove(name)
        tracked = self.book.finish(name, now=self.clock(), ok=True)
        assert tracked is not None
        self.scalars[tracked.program.id] = program_scalar(self.policy, tracked.program)

    def victim(self) -> str | None:
        self.waiting.now = self.clock()  # as the scheduler sets it before each step
        waiting = [r.request_id for r in self.waiting]
        keys = {rid: t.sort_key for rid in self.requests if (t := self.book.get(rid)) is not None}
        pairs = choose_victims(
            waiting=waiting[:1],
            running=self.running,
            keys=keys,
            free_slots=0,
            passed_over=set(waiting),
            preemptible=set(self.running),
        )
        return pairs[0][0] if pairs else None


events = st.lists(
    st.tuples(st.sampled_from(["arrive", "serve", "finish", "wait"]), st.integers(0, 9)),
    min_size=20,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["plas", "atlas", "mlfq"]), script=events)
def test_gate_simulator_and_plugin_decide_alike(name: str, script: list[tuple[str, int]]) -> None:
    asyncio.run(_drive(name, script))


async def _drive(name: str, script: list[tuple[str, int]]) -> None:
    clock = Clock()
    gate, sim = GateUser(make_policy(name), clock), SimUser(make_policy(name), clock)
    plugin = PluginUser(make_policy(name), clock)
    users = (gate, sim, plugin)
    calls = 0
    for op, i in script:
        if op == "arrive":
            calls += 1
            for user in users:
                user.arrive(f"p{i % 3}", f"c{calls}")
        elif op == "wait":
            clock.now += 0.25 * (i + 1)
        elif plugin.running:
            target = plugin.running[i % len(plugin.running)]
            if op == "serve":
                for user in users:
                    user.serve(target, i + 1)
            else:
                for user in users:
                    user.serve(target, 1)  # every finished call produced output
                    user.finish(target)
        for user in users:
            user.fill()
        assert gate.admitted == sim.admitted == plugin.admitted
        assert sorted(plugin.running) == sorted(sim.running)
        assert gate.victim() == plugin.victim()
    policy = gate.policy
    for pid in {f"p{k}" for k in range(3)}:
        records = [u.program(pid) for u in (gate, sim)]
        if records[0] is None:
            continue
        a, b = records
        assert b is not None
        assert (program_scalar(policy, a), a.wait) == (program_scalar(policy, b), b.wait)
