"""Admission against per-engine caps: which waiting call runs where, and which running call a
waiting one may preempt.

``Admission`` owns a ``RankedQueue`` (one lane per model) and the running set of every engine
the caller registered. An engine has room while it is open (healthy, not held back) and holds
fewer calls than its cap. A new call runs at once if an engine serving its model has room and
no better call already waits for it; otherwise it queues. Whenever room appears (a release, an
engine re-opened), ``dispatch`` hands it to the best waiting calls, one decision at a time.

Decisions come back as data (``Grant``, victims); the caller applies them (resolves futures,
asks a call to give its slot back). ``alive`` lets the caller drop calls whose client left
before their grant, so a slot is never given to nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

from proxy.core.preempt import PreemptRule
from proxy.core.queue import INF, RankedQueue, Waiting
from proxy.policies.base import Policy, Priority

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class EngineSlots(Generic[T]):
    """One engine as admission sees it."""

    name: str
    cap: int | None = None  # most calls at once; None: no cap
    models: frozenset[str] | None = None  # None: unknown (it then serves only model-less calls)
    open: bool = True  # healthy and not held back by its own queue
    running: dict[Waiting[T], None] = field(default_factory=dict)  # an ordered set
    levels: dict[int, int] = field(default_factory=dict)  # running calls per level

    def serves(self, lane: Hashable) -> bool:
        return lane is None or (self.models is not None and lane in self.models)

    @property
    def has_room(self) -> bool:
        return self.open and (self.cap is None or len(self.running) < self.cap)

    def worst_level(self) -> int:
        return max(self.levels) if self.levels else -1


class Grant(NamedTuple, Generic[T]):
    """A decision: ``entry`` runs on ``engine`` now."""

    entry: Waiting[T]
    engine: str


class Admission(Generic[T]):
    """Waiting calls, running sets and the decisions between them (see the module docstring).

    ``pick`` chooses among the engines with room for a call (default: the one holding the
    fewest calls, then the first registered)."""

    def __init__(
        self,
        policy: Policy,
        rule: PreemptRule,
        *,
        pick: Callable[[list[EngineSlots[T]], Waiting[T]], EngineSlots[T]] | None = None,
    ) -> None:
        self.policy = policy
        self.rule = rule
        self.queue: RankedQueue[T] = RankedQueue(policy)
        self.engines: dict[str, EngineSlots[T]] = {}
        self._pick = pick or _fewest_running

    # -- engines -----------------------------------------------------------------------------

    def engine(self, name: str) -> EngineSlots[T]:
        slots = self.engines.get(name)
        if slots is None:
            slots = self.engines[name] = EngineSlots(name)
        return slots

    def held(self, name: str) -> int:
        slots = self.engines.get(name)
        return 0 if slots is None else len(slots.running)

    # -- calls -------------------------------------------------------------------------------

    def offer(self, w: Waiting[T], now: float, *, may_grant: bool = True) -> Grant[T] | None:
        """A call wants to run: a grant at once, or None and it waits (ranked now). It runs
        at once only if an engine serving its model has room and no better call waits for
        any of the models that engine serves; ``may_grant`` False queues it regardless (a
        decision is already due, and the queue's order must make it)."""
        w.rank = self.queue.rank(w, now)
        if may_grant:
            room = [s for s in self._room_for(w.lane) if self._nobody_better(s, w, now)]
            if room:
                # With several engines the picker decides even when one has room: it counts
                # its choices (a program moved off its full engine, prefixes routed).
                only = len(self.engines) == 1
                return self._grant(w, room[0] if only else self._pick(room, w), now)
        self.queue.push(w, now, rank=w.rank)
        return None

    def _nobody_better(self, slots: EngineSlots[T], w: Waiting[T], now: float) -> bool:
        """Does no call better than ``w`` wait for a model ``slots`` serves?"""
        if not len(self.queue):
            return True
        best = self.best_waiting_for(slots.name, now)
        return best is None or not best.order < w.order

    def cancel(self, w: Waiting[T]) -> None:
        """The call left while waiting."""
        self.queue.remove(w)

    def release(self, w: Waiting[T]) -> None:
        """The call left its engine (finished, failed or preempted); call ``dispatch`` next."""
        if w.engine is None:
            return
        slots = self.engines.get(w.engine)
        if slots is not None and w in slots.running:
            del slots.running[w]
            self._count(slots, w.rank.level, -1)
        w.engine = None
        w.admitted_at = None

    def rerank_running(self, w: Waiting[T], rank: Priority) -> None:
        """A running call's rank changed (it was served)."""
        slots = self.engines.get(w.engine) if w.engine is not None else None
        if slots is not None and w in slots.running:
            self._count(slots, w.rank.level, -1)
            self._count(slots, rank.level, +1)
        w.rank = rank

    def dispatch(self, now: float, alive: Callable[[T], bool]) -> Iterator[Grant[T]]:
        """Give the room there is to the best waiting calls, one grant at a time: the caller
        applies each before the next is decided, so an error part-way (a policy raising while
        a call is ranked) loses no grant already made. Calls that are not ``alive`` any more
        (their client left) are dropped from the queue, never granted."""
        queue = self.queue
        engines = self.engines.values()
        if len(self.engines) == 1:  # the common deployment: no lanes or choices to weigh
            (only,) = engines
            while len(queue) and only.has_room:
                lanes = [lane for lane in queue.lanes() if only.serves(lane)]
                w = queue.pop(now, lanes) if lanes else None
                if w is None:
                    return
                if alive(w.item):
                    yield self._grant(w, only, now)
            return
        while len(queue) and any(s.has_room for s in engines):
            rooms = {lane: room for lane in queue.lanes() if (room := self._room_for(lane))}
            if not rooms:
                return
            w = queue.pop(now, rooms)
            if w is None:
                return
            if alive(w.item):
                yield self._grant(w, self._pick(rooms[w.lane], w), now)

    def victim(
        self, w: Waiting[T], now: float, preemptible: Callable[[T], bool]
    ) -> tuple[Waiting[T] | None, float]:
        """The running call that waiting ``w`` may preempt now, if any: the worst-ranked
        ``preemptible`` one, among the engines serving its model, that had its quantum and that
        ``w`` outranks by the rule's margin. Also, when none may be preempted yet, the earliest
        time one that ``w`` outranks will have had its quantum (inf if none), so the caller
        can look again then."""
        rule = self.rule
        if not rule.preempt:
            return None, INF
        best: Waiting[T] | None = None
        ready_at = INF
        for slots in self.engines.values():
            if not slots.running or not slots.serves(w.lane):
                continue
            if rule.margin > 0 and slots.worst_level() - w.rank.level < rule.margin:
                continue  # nothing here is bad enough: skip the scan
            for r in slots.running:
                if not (rule.outranks(w.rank, r.rank) and preemptible(r.item)):
                    continue
                if not rule.ready(r.admitted_at, now):
                    if r.admitted_at is not None:
                        ready_at = min(ready_at, r.admitted_at + rule.min_quantum_s)
                    continue
                if best is None or r.order > best.order:
                    best = r
        return best, (INF if best is not None else ready_at)

    def best_waiting_for(self, engine: str, now: float) -> Waiting[T] | None:
        slots = self.engines.get(engine)
        if slots is None:
            return None
        return self.queue.peek(now, [lane for lane in self.queue.lanes() if slots.serves(lane)])

    # -- internals ---------------------------------------------------------------------------

    def _room_for(self, lane: Hashable) -> list[EngineSlots[T]]:
        return [s for s in self.engines.values() if s.has_room and s.serves(lane)]

    def _grant(self, w: Waiting[T], slots: EngineSlots[T], now: float) -> Grant[T]:
        slots.running[w] = None
        self._count(slots, w.rank.level, +1)
        w.engine = slots.name
        w.admitted_at = now
        return Grant(w, slots.name)

    @staticmethod
    def _count(slots: EngineSlots[T], level: int, delta: int) -> None:
        n = slots.levels.get(level, 0) + delta
        if n > 0:
            slots.levels[level] = n
        else:
            slots.levels.pop(level, None)


def _fewest_running(slots: list[EngineSlots[T]], w: Waiting[T]) -> EngineSlots[T]:
    return min(slots, key=lambda s: len(s.running))
