"""The proxy-side priority gate: the order of calls, enforced in front of engines that cannot
enforce it themselves.

Each engine may take at most ``max_inflight`` calls at once (its config), or, with
``adaptive`` on, no new call while it reports requests waiting in its own queue. Calls beyond
that wait here, and whenever a slot frees the best waiting call (by the policy's priority
*now*, so anti-starvation promotions count) gets it. When a waiting call outranks a running
one by ``preempt_margin`` levels and the running one has held its slot for ``min_quantum_s``,
the running call is preempted: the gate asks its owner to give the slot back, and the owner
(the request handler) aborts it at the engine and queues again to resume later.

The decisions (``rank``, ``pick_victim``) are pure functions of the records and ``now``;
the class around them only keeps futures and counters.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proxy.kvhints.pool import EnginePool, EngineState
from proxy.policies.base import Policy, Priority
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class GateConfig:
    """``preempt``: preempt running calls for waiting ones that outrank them.
    ``preempt_margin``: levels by which the waiting call must outrank the running one.
    ``min_quantum_s``: a call keeps its slot at least this long before it can be preempted
    (no thrashing: each preemption costs the engine a re-prefill).
    ``adaptive``: hold calls while an engine reports requests waiting in its own queue."""

    preempt: bool = True
    preempt_margin: int = 1
    min_quantum_s: float = 0.5
    adaptive: bool = False


@dataclass(slots=True, eq=False)
class Ticket:
    """One call's claim on an engine slot, held across preemptions and resumptions."""

    call: Call
    program: Program
    model: str | None
    preemptible: bool = False
    seq: int = 0
    priority: Priority = field(default_factory=lambda: Priority(0))
    engine: EngineState | None = None
    granted_at: float | None = None
    preempt_requested: bool = False
    on_preempt: Callable[[], None] | None = None  # set by the owner while it holds a slot
    future: asyncio.Future[EngineState] | None = None


def rank(ticket: Ticket) -> tuple[Priority, int]:
    return ticket.priority, ticket.seq


def pick_victim(
    waiting: Ticket, running: Iterable[Ticket], *, now: float, margin: int, min_quantum_s: float
) -> Ticket | None:
    """The running call to preempt for ``waiting``, if any: the worst-ranked preemptible call
    that ``waiting`` outranks by ``margin`` levels and that has had its minimum quantum."""
    best: Ticket | None = None
    for other in running:
        if not other.preemptible or other.preempt_requested or other.granted_at is None:
            continue
        if now - other.granted_at < min_quantum_s:
            continue
        if other.priority.level - waiting.priority.level < margin:
            continue
        if best is None or rank(other) > rank(best):
            best = other
    return best


class Gate:
    def __init__(
        self,
        pool: EnginePool,
        policy: Policy,
        config: GateConfig,
        clock: Callable[[], float],
        *,
        on_preempt: Callable[[Ticket], None] | None = None,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.config = config
        self.clock = clock
        self.waiting: list[Ticket] = []
        self.running: dict[str, set[Ticket]] = {}
        self._seq = itertools.count(1)  # 0 marks a ticket that has not queued yet
        self._on_preempt = on_preempt
        self.preemptions = 0

    # -- capacity ------------------------------------------------------------------------------

    def _has_room(self, engine: EngineState) -> bool:
        if not engine.healthy:
            return False
        held = len(self.running.get(engine.name, ()))
        cap = engine.backend.config.max_inflight
        if cap is not None and held >= cap:
            return False
        # Adaptive: the engine queues calls itself, so ours would only wait there, unordered.
        return not (self.config.adaptive and held > 0 and (engine.load.waiting or 0) > 0)

    def _engine_for(self, model: str | None) -> EngineState | None:
        """The least busy engine with room that serves ``model``; None if all are full.
        Unknown models and unhealthy pools raise, as ``EnginePool.choose`` does."""
        self.pool.choose(model)  # raises NotFound / ServiceUnavailable with a clear message
        candidates = [
            s
            for s in self.pool.engines.values()
            if (model is None or (s.models is not None and model in s.models)) and self._has_room(s)
        ]
        if not candidates:
            return None
        return min(
            candidates, key=lambda s: (len(self.running.get(s.name, ())), s.load.waiting or 0)
        )

    # -- the life of a ticket ----------------------------------------------------------------

    async def acquire(self, ticket: Ticket) -> EngineState:
        """Wait for a slot; returns the engine. Cancelling the wait leaves the queue cleanly."""
        now = self.clock()
        ticket.seq = next(self._seq) if ticket.seq == 0 else ticket.seq
        ticket.priority = self.policy.priority(call=ticket.call, program=ticket.program, now=now)
        ticket.preempt_requested = False
        engine = self._engine_for(ticket.model)
        if engine is not None and not self._better_waiting(ticket, engine):
            return self._grant(ticket, engine, now)
        loop = asyncio.get_running_loop()
        ticket.future = loop.create_future()
        self.waiting.append(ticket)
        self._consider_preemption(ticket, now)
        try:
            return await ticket.future
        except asyncio.CancelledError:
            if ticket in self.waiting:
                self.waiting.remove(ticket)
            elif ticket.future.done() and not ticket.future.cancelled():
                self.release(ticket)  # granted just as it was cancelled: give it back
            raise
        finally:
            ticket.future = None

    def release(self, ticket: Ticket) -> None:
        """The ticket's call left its engine (finished, failed or preempted)."""
        engine = ticket.engine
        if engine is not None:
            held = self.running.get(engine.name)
            if held is not None:
                held.discard(ticket)
        ticket.engine = None
        ticket.granted_at = None
        ticket.on_preempt = None
        self.dispatch()

    def reprioritized(self, ticket: Ticket, priority: Priority) -> None:
        """A running call's priority changed (demotion as it is served): a waiting call may
        now outrank it."""
        ticket.priority = priority
        if self.waiting and self.config.preempt:
            now = self.clock()
            for waiting in sorted(self.waiting, key=rank)[:1]:
                self._consider_preemption(waiting, now)

    def dispatch(self) -> None:
        """Give free slots to the best waiting calls."""
        if not self.waiting:
            return
        now = self.clock()
        for ticket in self.waiting:
            ticket.priority = self.policy.priority(
                call=ticket.call, program=ticket.program, now=now
            )
        self.waiting.sort(key=rank)
        granted: list[Ticket] = []
        for ticket in self.waiting:
            try:
                engine = self._engine_for(ticket.model)
            except Exception as exc:  # the model vanished or every engine died: fail the wait
                if ticket.future is not None and not ticket.future.done():
                    ticket.future.set_exception(exc)
                granted.append(ticket)
                continue
            if engine is None:
                continue
            self._grant(ticket, engine, now)
            granted.append(ticket)
        for ticket in granted:
            self.waiting.remove(ticket)

    # -- internals -----------------------------------------------------------------------------

    def _grant(self, ticket: Ticket, engine: EngineState, now: float) -> EngineState:
        ticket.engine = engine
        ticket.granted_at = now
        self.running.setdefault(engine.name, set()).add(ticket)
        if ticket.future is not None and not ticket.future.done():
            ticket.future.set_result(engine)
        return engine

    def _better_waiting(self, ticket: Ticket, engine: EngineState) -> bool:
        """Is a better call already waiting for this engine? Then a newcomer must not jump it."""
        return any(
            rank(w) < rank(ticket)
            for w in self.waiting
            if w.model is None or (engine.models is not None and w.model in engine.models)
        )

    def _consider_preemption(self, waiting: Ticket, now: float) -> None:
        if not self.config.preempt:
            return
        running = [
            t
            for name, held in self.running.items()
            for t in held
            if waiting.model is None
            or (
                t.engine is not None
                and t.engine.models is not None
                and waiting.model in t.engine.models
            )
        ]
        victim = pick_victim(
            waiting,
            running,
            now=now,
            margin=self.config.preempt_margin,
            min_quantum_s=self.config.min_quantum_s,
        )
        if victim is None or victim.on_preempt is None:
            return
        victim.preempt_requested = True
        self.preemptions += 1
        if self._on_preempt is not None:
            self._on_preempt(victim)
        victim.on_preempt()
