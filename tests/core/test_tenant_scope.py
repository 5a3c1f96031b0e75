"""PLAS and ATLAS with a tenant floor rank by tenant (``rank_scope = "tenant"``): a decision
re-ranks only the waiting calls of the tenant whose records changed. This checks that they
decide exactly as the full re-rank of every waiting call before each decision (the "global"
scope the floor used to declare) on random event sequences, through the core's ``Admission``
as the live gate drives it: same grants, same victims, same queue order and ranks.

Promotions: the global queue promotes a starving call at the first look at or after its
deadline; the incremental one at the deadline itself. So that both record the same promotion,
the driver looks at every deadline as time passes (the global queue is asked at the same
instants), and times and service amounts are multiples of 1/8 (exact in floating point).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import lifecycle
from proxy.core.admission import Admission
from proxy.core.preempt import PreemptRule
from proxy.core.queue import Waiting, rank_scope
from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Policy
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program

SLOTS = 2
LEVELS: dict[str, Any] = {"levels": 4, "first": 1.0, "growth": 2.0, "beta": 0.5}
TENANTS = ("a", "a", "b", "b", "c", "")  # program i's tenant ("" is exempt)
FLOORS = {
    "share": TenantFloorConfig(share=0.5, half_life_s=None),
    "fair": TenantFloorConfig(share=1.0, half_life_s=None, fair_key=True, weights={"b": 2.0}),
    "decay": TenantFloorConfig(share=1.0, half_life_s=4.0, fair_key=True),
}


def make_policy(name: str, floor: str) -> Policy:
    if name == "plas":
        return PLAS(PLASConfig(**LEVELS, tenant_floor=FLOORS[floor]))
    return ATLAS(ATLASConfig(**LEVELS, tenant_floor=FLOORS[floor]))


class Side:
    """One policy and the core's admission over one engine of ``SLOTS`` slots."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.hook = lifecycle.policy_hook(policy)
        self.core: Admission[None] = Admission(policy, PreemptRule(min_quantum_s=0.0))
        self.core.engine("e").cap = SLOTS
        self.programs = [
            Program(id=f"p{i}", created=float(i), tenant=tenant) for i, tenant in enumerate(TENANTS)
        ]
        self.running: list[Waiting[None]] = []
        self.grants: list[str] = []
        self.calls = 0

    def arrive(self, p: int, now: float) -> None:
        program = self.programs[p]
        self.calls += 1
        call = Call(id=f"c{self.calls}", program_id=program.id, arrival=now, queued_since=now)
        program.active[call.id] = call
        self.policy.on_arrival(call=call, program=program, now=now)
        grant = self.core.offer(self.core.queue.entry(call, program, None), now)
        if grant is not None:
            self._run(grant.entry, now)

    def serve(self, i: int, amount: float, now: float) -> None:
        if self.running:
            w = self.running[i % len(self.running)]
            w.call.service += amount
            rank = self.policy.on_service(call=w.call, program=w.program, now=now)
            self.core.rerank_running(w, rank)
            self.core.queue.touch(w.program, now)

    def preempt(self, i: int, now: float) -> None:
        if self.running:
            w = self.running.pop(i % len(self.running))
            self.core.release(w)
            lifecycle.preempted(w.call, now)
            self.core.queue.push(w, now)

    def finish(self, i: int, now: float) -> None:
        if self.running:
            w = self.running.pop(i % len(self.running))
            self.core.release(w)
            lifecycle.closed(w.call, now, ok=True)
            lifecycle.finished(self.hook, w.call, w.program, now)
            self.core.queue.touch(w.program, now)

    def fill(self, now: float) -> None:
        for grant in self.core.dispatch(now, alive=lambda _: True):
            self._run(grant.entry, now)

    def _run(self, w: Waiting[None], now: float) -> None:
        lifecycle.admitted(w.call, now)
        self.running.append(w)
        self.grants.append(w.call.id)

    def state(self, now: float) -> tuple[object, ...]:
        best = self.core.queue.peek(now)
        victim = None if best is None else self.core.victim(best, now, lambda _: True)[0]
        return (
            list(self.grants),
            [(w.call.id, w.rank) for w in self.core.queue],
            None if victim is None else victim.call.id,
            [(p.service, p.critical_path, p.wait) for p in self.programs],
        )


eighths = st.integers(1, 24).map(lambda k: k / 8)
ops = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "serve", "preempt", "finish", "wait"]),
        st.integers(0, 11),
        eighths,
    ),
    min_size=1,
    max_size=70,
)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(["plas", "atlas"]), floor=st.sampled_from(sorted(FLOORS)), script=ops)
def test_tenant_scope_decides_as_the_full_rerank(
    name: str, floor: str, script: list[tuple[str, int, float]]
) -> None:
    old_policy = make_policy(name, floor)
    old_policy.rank_scope = "global"  # type: ignore[attr-defined]  # the floor's old scope
    new_policy = make_policy(name, floor)
    assert rank_scope(old_policy) == "global"
    assert rank_scope(new_policy) == "tenant"
    old, new = Side(old_policy), Side(new_policy)
    now = 0.0
    for op, i, x in script:
        if op == "wait":
            target = now + x
            # Every deadline on the way is looked at, by both, at its own instant.
            while (due := new.core.queue.next_due()) <= target:
                now = max(now, due)
                assert old.state(now) == new.state(now)
            now = target
        for side in (old, new):
            if op == "arrive":
                side.arrive(i % len(TENANTS), now)
            elif op == "serve":
                side.serve(i, x, now)
            elif op == "preempt":
                side.preempt(i, now)
            elif op == "finish":
                side.finish(i, now)
            side.fill(now)
        assert old.state(now) == new.state(now)


def test_a_decision_reranks_only_the_touched_tenant() -> None:
    policy = make_policy("plas", "fair")
    side = Side(policy)
    for p in (0, 2, 4) * 10:  # tenants a, b, c: two run, 28 wait
        side.arrive(p, 0.0)
    queue = side.core.queue
    queue.peek(0.0)  # the arrivals are ranked in
    waiting_a = sum(1 for w in queue if w.program.tenant == "a")
    before = queue.reranks
    side.serve(0, 0.5, 1.0)  # a call of tenant a was served: only a's waiting calls move
    assert side.running[0].program.tenant == "a"
    assert queue.reranks - before == waiting_a
    before = queue.reranks
    side.arrive(4, 1.0)  # a new call of tenant c: c's waiting calls are ranked at next look
    queue.peek(1.0)
    assert queue.reranks - before == sum(1 for w in queue if w.program.tenant == "c")
