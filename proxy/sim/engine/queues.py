"""The engine's waiting queue: the one place a scheduling policy changes the engine model.

vLLM V1 keeps waiting requests in a request queue with an FCFS and a priority implementation;
running requests are never reordered by it. The same queue also names the victim when KV
blocks run out, because vLLM ties that choice to the policy too. A later program-aware queue
plugs in here by implementing ``WaitingQueue``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Literal, Protocol

from proxy.sim.engine.request import EngineRequest

SchedulingPolicy = Literal["fcfs", "priority"]


class WaitingQueue(Protocol):
    """Requests waiting for admission to the running batch, in the order they will be admitted.

    The engine model calls these synchronously; implementations must not read clocks or do I/O.
    """

    def push(self, request: EngineRequest) -> None:
        """Queue a newly arrived request."""
        ...

    def prepend(self, request: EngineRequest) -> None:
        """Requeue a request that was just preempted (it resumes ahead of later arrivals)."""
        ...

    def peek(self) -> EngineRequest:
        """The request to admit next; ``IndexError`` if the queue is empty."""
        ...

    def pop(self) -> EngineRequest:
        """Remove and return the request ``peek`` names."""
        ...

    def remove(self, request: EngineRequest) -> bool:
        """Drop ``request`` (an abort); False if it was not queued."""
        ...

    def victim(self, running: Sequence[EngineRequest]) -> EngineRequest:
        """The running request to preempt when KV blocks run out (``running`` is non-empty and
        in admission order)."""
        ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[EngineRequest]:
        """The queued requests in admission order."""
        ...


class FCFSQueue:
    """Arrival order; a preempted request goes back to the front. The victim is the request
    admitted last, as vLLM's ``running.pop()``."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: deque[EngineRequest] = deque()

    def push(self, request: EngineRequest) -> None:
        self._items.append(request)

    def prepend(self, request: EngineRequest) -> None:
        self._items.appendleft(request)

    def peek(self) -> EngineRequest:
        return self._items[0]

    def pop(self) -> EngineRequest:
        return self._items.popleft()

    def remove(self, request: EngineRequest) -> bool:
        try:
            self._items.remove(request)
        except ValueError:
            return False
        return True

    def victim(self, running: Sequence[EngineRequest]) -> EngineRequest:
        return running[-1]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[EngineRequest]:
        return iter(self._items)


class PriorityQueue:
    """Ordered by (priority, arrival), lower first; a preempted request simply re-enters at its
    place. The victim is the worst running request by the same key. Exact ties fall to the
    order requests were added (vLLM leaves them to list order)."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, float, int, EngineRequest]] = []

    def push(self, request: EngineRequest) -> None:
        heapq.heappush(self._heap, (request.priority, request.arrival, request.seq, request))

    prepend = push

    def peek(self) -> EngineRequest:
        return self._heap[0][3]

    def pop(self) -> EngineRequest:
        return heapq.heappop(self._heap)[3]

    def remove(self, request: EngineRequest) -> bool:
        # Aborts are rare next to pushes and pops, so a linear scan beats lazy deletion here.
        for i, entry in enumerate(self._heap):
            if entry[3] is request:
                last = self._heap.pop()
                if i < len(self._heap):
                    self._heap[i] = last
                    heapq.heapify(self._heap)
                return True
        return False

    def victim(self, running: Sequence[EngineRequest]) -> EngineRequest:
        return max(running, key=lambda r: (r.priority, r.arrival, r.seq))

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[EngineRequest]:
        return (entry[3] for entry in sorted(self._heap, key=lambda e: e[:3]))


def make_queue(policy: SchedulingPolicy) -> WaitingQueue:
    """The queue vLLM's ``--scheduling-policy`` of that name uses."""
    if policy == "fcfs":
        return FCFSQueue()
    if policy == "priority":
        return PriorityQueue()
    raise ValueError(f"unknown scheduling policy {policy!r}; expected 'fcfs' or 'priority'")
