"""The core's ranked queue: incremental re-ranking decides exactly as re-ranking every waiting
call before each decision would, and it asks the policy only when a rank can change."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import lifecycle
from proxy.core.queue import RankedQueue, Waiting, rank_scope
from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Policy, Priority
from proxy.policies.fcfs import FCFS
from proxy.policies.levels import LevelsConfig
from proxy.policies.mlfq import MLFQ
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program

LEVELS: dict[str, Any] = {"levels": 4, "first": 1.0, "growth": 2.0, "beta": 0.5}


def policies() -> dict[str, Policy]:
    return {
        "plas": PLAS(PLASConfig(**LEVELS)),
        "atlas": ATLAS(ATLASConfig(**LEVELS)),
        "mlfq": MLFQ(LevelsConfig(**LEVELS)),
        "atlas-floor": ATLAS(ATLASConfig(**LEVELS, tenant_floor=TenantFloorConfig(share=0.5))),
        "plas-fair": PLAS(
            PLASConfig(**LEVELS, tenant_floor=TenantFloorConfig(share=1.0, fair_key=True))
        ),
    }


class Model:
    """Programs, calls and a queue driven through the core's lifecycle, as any mechanism."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.queue: RankedQueue[None] = RankedQueue(policy)
        self.programs = [
            Program(id=f"p{i}", created=float(i), tenant=f"t{i % 2}") for i in range(4)
        ]
        self.running: list[Waiting[None]] = []
        self.now = 0.0
        self.calls = 0
        self.hook = lifecycle.policy_hook(policy)

    def arrive(self, p: int) -> None:
        program = self.programs[p]
        self.calls += 1
        call = Call(
            id=f"c{self.calls}", program_id=program.id, arrival=self.now, queued_since=self.now
        )
        program.active[call.id] = call
        self.policy.on_arrival(call=call, program=program, now=self.now)
        self.queue.push(self.queue.entry(call, program, None), self.now)

    def admit(self) -> None:
        w = self.queue.pop(self.now)
        if w is not None:
            lifecycle.admitted(w.call, self.now)
            self.running.append(w)

    def serve(self, i: int, amount: float) -> None:
        if self.running:
            w = self.running[i % len(self.running)]
            w.call.service += amount
            self.policy.on_service(call=w.call, program=w.program, now=self.now)
            self.queue.touch(w.program, self.now)

    def preempt(self, i: int) -> None:
        if self.running:
            w = self.running.pop(i % len(self.running))
            lifecycle.preempted(w.call, self.now)
            self.queue.push(w, self.now)

    def finish(self, i: int) -> None:
        if self.running:
            w = self.running.pop(i % len(self.running))
            lifecycle.closed(w.call, self.now, ok=True)
            lifecycle.finished(self.hook, w.call, w.program, self.now)
            self.queue.touch(w.program, self.now)

    def reference(self) -> list[tuple[Priority, int]]:
        """Every waiting call's place if each were ranked afresh now (on copies, so the
        policy's own state is not disturbed), best first."""
        waiting = list(self.queue)
        policy, records = copy.deepcopy((self.policy, [(w.call, w.program) for w in waiting]))
        orders = [
            (policy.priority(call=call, program=program, now=self.now), w.seq)
            for w, (call, program) in zip(waiting, records, strict=True)
        ]
        return sorted(orders)

    def check(self) -> None:
        head = self.queue.peek(self.now)  # applies what is due by now
        expected = self.reference()
        assert [w.order for w in self.queue] == expected
        assert (head.order if head else None) == (expected[0] if expected else None)


ops = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "admit", "serve", "preempt", "finish", "wait"]),
        st.integers(0, 7),
        st.floats(0.05, 3.0),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(policies())), script=ops)
def test_incremental_ranks_decide_as_a_full_rerank_would(
    name: str, script: list[tuple[str, int, float]]
) -> None:
    model = Model(policies()[name])
    for op, i, x in script:
        if op == "arrive":
            model.arrive(i % 4)
        elif op == "admit":
            model.check()
            model.admit()
        elif op == "serve":
            model.serve(i, x)
        elif op == "preempt":
            model.preempt(i)
        elif op == "finish":
            model.finish(i)
        else:
            model.now += x
        model.check()


def test_a_waiting_call_is_asked_again_only_at_its_deadline() -> None:
    policy = PLAS(PLASConfig(**LEVELS))
    model = Model(policy)
    model.programs[0].service = 6.0  # T = 6: with beta 0.5 it starves after 3 s of waiting
    model.arrive(0)
    model.arrive(1)
    asked = model.queue.reranks
    model.now = 2.9
    model.queue.peek(model.now)
    assert model.queue.reranks == asked  # nothing was due: nobody was asked
    assert model.queue.next_due() == 3.0
    model.now = 3.5
    head = model.queue.peek(model.now)
    assert model.queue.reranks == asked + 1  # the one deadline that passed
    assert head is not None
    assert head.call.id == "c1"  # promoted to the top queue, ahead by arrival
    assert head.rank.level == 0


def test_scopes_are_the_policies_own() -> None:
    assert rank_scope(FCFS()) == "call"
    assert rank_scope(PLAS()) == "program"
    # The floor moves with the tenant's own calls only: its waiting calls are ranked again.
    assert rank_scope(ATLAS(ATLASConfig(tenant_floor=TenantFloorConfig()))) == "tenant"
    assert rank_scope(PLAS(PLASConfig(tenant_floor=TenantFloorConfig()))) == "tenant"

    class PlugIn:  # declares nothing: re-ranked in full before every decision
        name = "plug"

    assert rank_scope(PlugIn()) == "global"  # type: ignore[arg-type]


def test_stale_items_do_not_pile_up() -> None:
    policy = FCFS()
    queue: RankedQueue[None] = RankedQueue(policy)
    program = Program(id="p", created=0.0)
    entries = []
    for i in range(100):
        call = Call(id=str(i), program_id="p", arrival=float(i), queued_since=0.0)
        entries.append(queue.entry(call, program, None))
    for _ in range(50):
        for w in entries:
            queue.push(w, 0.0)
        for w in entries[:-1]:
            queue.remove(w)
    assert len(queue) == 1
    assert len(queue._heaps[None]) <= 2 * len(queue) + 64 + len(entries)
    assert math.isinf(queue.next_due())
