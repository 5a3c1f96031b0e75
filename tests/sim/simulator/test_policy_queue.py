"""The policy-ordered waiting queue: order, wait accounting, the preemption rule, the prefix
cache it consults."""

from __future__ import annotations

import pytest

from proxy.policies.base import Priority
from proxy.policies.fcfs import FCFS
from proxy.policies.plas import PLAS
from proxy.records import Call, CallState, Program
from proxy.sim.engine.engine import EngineModel, EngineRequest
from proxy.sim.simulator.policy_queue import PolicyQueue, PreemptConfig, PrefixCache, Tracked


def track(
    queue: PolicyQueue, rid: str, rank: Priority, *, prompt: int = 4, out: int = 4
) -> Tracked:
    request = EngineRequest(id=rid, prompt_tokens=prompt, target_tokens=out, max_tokens=out)
    call = Call(id=rid, program_id=rid, arrival=0.0, queued_since=queue.now)
    return queue.track(request, call, Program(id=rid, created=0.0), rank)


def engine(queue: PolicyQueue, **kwargs: int) -> EngineModel:
    options = {
        "max_num_seqs": 2,
        "kv_capacity_tokens": 64,
        "max_num_batched_tokens": 8,
        "block_size": 4,
    }
    options.update(kwargs)
    return EngineModel(queue=queue, **options)  # type: ignore[arg-type]


def test_orders_by_priority_then_arrival_and_names_the_worst_victim() -> None:
    queue = PolicyQueue(FCFS())
    a = track(queue, "a", Priority(1, 0.0))
    b = track(queue, "b", Priority(0, 5.0))
    c = track(queue, "c", Priority(1, 0.0))  # ties with a: a came first
    for t in (a, b, c):
        queue.push(t.request)
    assert [r.id for r in queue] == ["b", "a", "c"]
    assert queue.peek().id == "b"
    assert queue.victim([b.request, a.request, c.request]).id == "c"
    assert queue.remove(a.request)
    assert not queue.remove(a.request)
    assert [queue.pop().id, queue.pop().id] == ["b", "c"]
    assert len(queue) == 0


def test_waits_are_measured_from_the_queue_side() -> None:
    queue = PolicyQueue(FCFS())
    queue.now = 1.0
    t = track(queue, "a", Priority(0))
    queue.push(t.request)
    queue.now = 3.5
    queue.pop()
    assert (t.call.wait, t.call.queued_since, t.call.started_at) == (2.5, None, 3.5)
    assert t.call.state is CallState.RUNNING
    assert t.admitted_at == 3.5
    queue.now = 4.0
    queue.prepend(t.request)  # preempted by the engine when KV ran out
    assert t.preemptions == 1
    assert t.call.state is CallState.PREEMPTED
    queue.now = 5.0
    queue.pop()
    assert t.call.wait == 3.5


def test_on_head_runs_once_per_call() -> None:
    seen: list[str] = []
    queue = PolicyQueue(FCFS(), on_head=lambda t: seen.append(t.request.id))
    t = track(queue, "a", Priority(0))
    queue.push(t.request)
    queue.peek()
    queue.peek()
    assert seen == ["a"]


def test_rerank_asks_on_service_for_running_calls_that_grew() -> None:
    queue = PolicyQueue(FCFS())
    model = engine(queue)
    policy = PLAS()
    t = track(queue, "a", Priority(0))
    model.add(t.request, 0.0)
    model.step(0.0)  # admitted and served
    calls: list[str] = []

    def refresh(tracked: Tracked) -> bool:
        calls.append(tracked.request.id)
        tracked.call.service = 100.0  # far past every boundary
        return True

    queue.rerank(policy, 1.0, model.running, refresh)
    assert calls == ["a"]
    assert t.rank.level == policy.levels.count - 1 == t.call.level


@pytest.mark.parametrize(
    ("margin", "quantum", "waiting_level", "expect"),
    [
        (1, 0.0, 0, ["low"]),  # one level better: preempt the worst
        (2, 0.0, 0, []),  # not better by two levels
        (1, 5.0, 0, []),  # the running calls have not had their quantum
        (1, 0.0, 1, []),  # same level as the worst: FCFS inside a level
        (0, 0.0, 1, ["low"]),  # margin 0: a better key within the level is enough
    ],
)
def test_victims_follow_margin_and_quantum(
    margin: int, quantum: float, waiting_level: int, expect: list[str]
) -> None:
    queue = PolicyQueue(FCFS())
    model = engine(queue)
    high = track(queue, "high", Priority(0, 0.0))
    low = track(queue, "low", Priority(1, 2.0))
    for t in (high, low):
        model.add(t.request, 0.0)
    model.step(0.0)
    assert model.num_running == 2  # no free slot
    newcomer = track(queue, "new", Priority(waiting_level, 1.0))
    model.add(newcomer.request, 1.0)
    config = PreemptConfig(margin=margin, min_quantum_s=quantum)
    assert [v.request.id for v in queue.victims(model, config, 1.0)] == expect
    assert queue.victims(model, PreemptConfig(preempt=False), 1.0) == []


def test_no_victim_when_there_is_room() -> None:
    queue = PolicyQueue(FCFS())
    model = engine(queue, max_num_seqs=4)
    low = track(queue, "low", Priority(5))
    model.add(low.request, 0.0)
    model.step(0.0)
    model.add(track(queue, "new", Priority(0)).request, 1.0)
    assert queue.victims(model, PreemptConfig(min_quantum_s=0), 1.0) == []


def test_prefix_cache_keeps_whole_blocks_and_drops_the_least_recent() -> None:
    cache = PrefixCache(block_size=4)
    cache.put(("p", 0), 13)
    cache.put(("q", 0), 8)
    assert cache.tokens == 20
    assert len(cache) == 2
    assert cache.hit(("p", 0), shared=13, prompt=20) == 12
    assert cache.hit(("p", 0), shared=13, prompt=10) == 8  # all but the last prompt token
    assert cache.hit(("p", 1), shared=13, prompt=20) == 0
    cache.trim(12)  # q was used least recently
    assert cache.hit(("q", 0), shared=8, prompt=20) == 0
    assert cache.tokens == 12
    cache.put(("p", 0), 2)  # under a block: nothing to keep
    assert cache.tokens == 0
    assert len(cache) == 0


def test_rerank_returns_the_served_programs_once_each() -> None:
    # The simulator touches its other engines' queues with them (a sibling or a tenant's
    # call may wait there), so a served program must come back, and an unserved one must not.
    queue = PolicyQueue(FCFS())
    model = engine(queue, max_num_seqs=3, max_num_batched_tokens=16)
    served_a1 = track(queue, "a1", Priority(0))
    served_a2 = track(queue, "a2", Priority(0))
    idle_b = track(queue, "b", Priority(0))
    served_a2.program = served_a1.program
    for t in (served_a1, served_a2, idle_b):
        model.add(t.request, 0.0)
    model.step(0.0)
    assert len(model.running) == 3

    def refresh(tracked: Tracked) -> bool:
        return tracked.request.id != "b"

    programs = queue.rerank(PLAS(), 1.0, model.running, refresh)
    assert programs == [served_a1.program]
