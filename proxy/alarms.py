"""Task deadlines on one loop timer: ``asyncio.timeout_at`` for the request path, at a
fraction of its cost.

Every call waits for its engine's first byte under a deadline, and nearly every call gets its
answer in time. A loop timer per call (armed, then cancelled) costs a timer-heap insert and
removal in the event loop each time; here an alarm is a heap entry of our own, and the one
loop timer stays armed at the earliest deadline. Calls' deadlines mostly come later than the
one armed (the same timeout, from a later start), so arming one touches no loop timer at all.
A cancelled alarm is only marked; the heap is rebuilt without them when they are the most of
it, so it stays as large as the alarms pending, whatever the rate of calls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

_COMPACT_AT = 64  # cancelled entries tolerated before a rebuild is considered


class Alarm:
    """One task's deadline. After a ``CancelledError`` the task asks ``own``: was it this
    alarm's, and nobody else's (then the cancellation is withdrawn, as ``asyncio.timeout``
    does)?"""

    __slots__ = ("_cancelling", "_owner", "_task", "done", "fired")

    def __init__(self, owner: Alarms, task: asyncio.Task[object], cancelling: int) -> None:
        self._owner = owner
        self._task = task
        self._cancelling = cancelling
        self.fired = False
        self.done = False  # fired or cancelled: its heap entry is dead

    def own(self) -> bool:
        return self.fired and self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._owner.dropped()

    def ring(self) -> None:
        self.done = self.fired = True
        self._task.cancel()


class Alarms:
    """The alarms of one event loop (one per proxy instance, kept in its state)."""

    __slots__ = ("_armed_at", "_dead", "_handle", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarm]] = []
        self._seq = itertools.count()
        self._dead = 0
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def __len__(self) -> int:
        """Alarms pending (not fired, not cancelled)."""
        return len(self._heap) - self._dead

    @property
    def entries(self) -> int:
        """Heap entries kept, cancelled ones not yet dropped included."""
        return len(self._heap)

    def at(self, when: float) -> Alarm:
        """Cancel the current task at loop time ``when``, unless ``cancel`` comes first."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None  # only ever used from a request's task
        alarm = Alarm(self, task, task.cancelling())
        heapq.heappush(self._heap, (when, next(self._seq), alarm))
        if when < self._armed_at:
            self._arm(loop, when)
        return alarm

    def dropped(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > _COMPACT_AT and 2 * self._dead > len(heap):
            self._heap = [entry for entry in heap if not entry[2].done]
            heapq.heapify(self._heap)
            self._dead = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = loop.call_at(when, self._ring)

    def _ring(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            alarm = heapq.heappop(heap)[2]
            if alarm.done:
                self._dead -= 1
            else:
                alarm.ring()
        if heap:
            self._arm(loop, heap[0][0])
