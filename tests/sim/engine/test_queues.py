"""The engine's waiting queues: FCFS and priority order, requeueing and the preemption victim."""

from __future__ import annotations

import pytest

from proxy.sim.engine.engine import EngineRequest
from proxy.sim.engine.queues import FCFSQueue, PriorityQueue, WaitingQueue, make_queue


def req(rid: str, *, priority: int = 0) -> EngineRequest:
    return EngineRequest(
        id=rid, prompt_tokens=1, target_tokens=1, max_tokens=100, priority=priority, arrival=0.0
    )


@pytest.mark.parametrize(
    ("queue", "order", "victim"),
    [(FCFSQueue(), ["a", "c"], "c"), (PriorityQueue(), ["c", "a"], "a")],
)
def test_queues_follow_the_protocol(queue: WaitingQueue, order: list[str], victim: str) -> None:
    a, b, c = req("a", priority=2), req("b", priority=1), req("c")
    for seq, r in enumerate((a, b, c)):
        r.seq = seq
        queue.push(r)
    assert len(queue) == 3
    assert queue.remove(b)
    assert not queue.remove(b)
    head = queue.pop()
    assert head.id == order[0]
    assert [r.id for r in queue] == order[1:]
    queue.prepend(head)
    assert queue.peek() is head
    assert [r.id for r in queue] == order
    assert queue.victim([a, c]).id == victim


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        make_queue("lifo")  # type: ignore[arg-type]
