"""The proxy-side priority gate: the order of calls, enforced in front of engines that cannot
enforce it themselves.

Each engine may take at most ``max_inflight`` calls at once (its config) and at most the
admission cap's k (``cap``: fixed, or adaptive from the engine's tokens/s, ``proxy.gatecap``),
or, with ``adaptive`` on, no new call while it reports requests waiting in its own queue. Calls beyond
that wait here, and whenever a slot frees the best waiting call (by the policy's priority
*now*, so anti-starvation promotions count) gets it. When a waiting call outranks a running
one by ``preempt_margin`` levels and the running one has held its slot for ``min_quantum_s``,
the running call is preempted: the gate asks its owner to give the slot back, and the owner
(the request handler) aborts it at the engine and queues again to resume later.

Every decision is the scheduling core's (``proxy.core.admission``); this module only keeps
the asyncio futures that wait on those decisions and mirrors the engines' state into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from proxy.core import lifecycle
from proxy.core.admission import Admission, EngineSlots, Grant
from proxy.core.concurrency import CapConfig, CapMode
from proxy.core.preempt import PreemptRule
from proxy.core.queue import INF, Waiting
from proxy.gatecap import GateCaps
from proxy.kvhints.balancers.autellix import AutellixBalancer
from proxy.kvhints.load import EngineLoad
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.kvhints.router import Router
from proxy.policies.base import Policy, Priority
from proxy.records import Call, CallState, Program


@dataclass(frozen=True, slots=True)
class GateConfig:
    """``preempt``: preempt running calls for waiting ones that outrank them.
    ``preempt_margin``: levels by which the waiting call must outrank the running one.
    ``min_quantum_s``: a call keeps its slot at least this long before it can be preempted
    (no thrashing: each preemption costs the engine a re-prefill).
    ``adaptive``: hold calls while an engine reports requests waiting in its own queue.
    ``cap``, ``cap_k``: the admission cap per engine (off, fixed at ``cap_k``, or adaptive;
    ``proxy.gatecap``)."""

    preempt: bool = True
    preempt_margin: int = 1
    min_quantum_s: float = 0.5
    adaptive: bool = False
    cap: CapMode = "off"
    cap_k: int | None = None

    @property
    def rule(self) -> PreemptRule:
        return PreemptRule(self.preempt, self.preempt_margin, self.min_quantum_s)

    @property
    def cap_config(self) -> CapConfig:
        return CapConfig(mode=self.cap, k=self.cap_k)


@dataclass(slots=True, eq=False)
class Ticket:
    """One call's claim on an engine slot, held across preemptions and resumptions."""

    call: Call
    program: Program
    model: str | None
    preemptible: bool = False
    priority: Priority = field(default_factory=lambda: Priority(0))
    engine: EngineState | None = None
    preempt_requested: bool = False
    on_preempt: Callable[[], None] | None = None  # set by the owner while it holds a slot
    future: asyncio.Future[EngineState] | None = None
    entry: Waiting[Ticket] | None = None  # its place in the core, made on first acquire
    blocks: tuple[int, ...] = ()  # its prompt's prefix blocks (``Router.blocks``)
    granted_tokens: int = 0  # its completion tokens at its last grant (the cap's tokens/s)

    @property
    def granted_at(self) -> float | None:
        return None if self.entry is None else self.entry.admitted_at


class Gate:
    def __init__(
        self,
        pool: EnginePool,
        policy: Policy,
        config: GateConfig,
        clock: Callable[[], float],
        *,
        on_preempt: Callable[[Ticket], None] | None = None,
        router: Router | None = None,
    ) -> None:
        self.pool = pool
        self.router = router or Router(AutellixBalancer())
        self.policy = policy
        self.config = config
        self.clock = clock
        self.core: Admission[Ticket] = Admission(policy, config.rule, pick=self._pick)
        self._on_preempt = on_preempt
        self._degraded = False
        self._dispatch_pending = False
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = INF
        self.preemptions = 0
        self.caps = GateCaps(config.cap_config, clock(), policy)

    @property
    def queued(self) -> int:
        """How many calls wait here (O(1))."""
        return len(self.core.queue)

    @property
    def waiting(self) -> list[Ticket]:
        """The waiting tickets, best first (O(n log n): for listings and tests)."""
        return [w.item for w in self.core.queue]

    def running(self, engine: str) -> int:
        return self.core.held(engine)

    # -- the life of a ticket ----------------------------------------------------------------

    async def acquire(self, ticket: Ticket) -> EngineState:
        """Wait for a slot; returns the engine. Cancelling the wait leaves the queue cleanly.
        Unknown models and pools with no healthy engine for the model raise at once."""
        self._check_model(ticket.model)
        now = self.clock()
        entry = ticket.entry
        if entry is None:
            entry = ticket.entry = self.core.queue.entry(
                ticket.call, ticket.program, ticket, lane=ticket.model
            )
        ticket.preempt_requested = False
        call = ticket.call
        if call.queued_since is None:  # back after a failed attempt: it waits again from now
            lifecycle.requeued(call, now, preempted_before=call.state is CallState.PREEMPTED)
        self._sync()
        # With a hand-over already due (a slot was released, the loop has not run the
        # dispatch yet), the newcomer queues: the dispatch decides by rank, not by who came
        # back first (a preempted call must not take back the slot it gave up).
        grant = self.core.offer(entry, now, may_grant=not self._dispatch_pending)
        ticket.priority = entry.rank
        if grant is not None:  # a free slot and nobody better waiting: no future to make
            return self._apply(grant)
        # Grants come from ``dispatch``, which runs from the loop, never inside this call: a
        # future made now, before this task yields, receives any grant.
        future: asyncio.Future[EngineState] = asyncio.get_running_loop().create_future()
        ticket.future = future
        self._consider_preemption(entry, now)
        try:
            return await future
        except asyncio.CancelledError:
            self.core.cancel(entry)
            if ticket.engine is not None:  # granted just as it was cancelled: give it back
                self.release(ticket)
            raise
        finally:
            ticket.future = None

    def release(self, ticket: Ticket) -> None:
        """The ticket's call left its engine (finished, failed or preempted). The slot is
        handed on once the releasing task yields: a finished call is accounted first (its
        program's new service and wait), so the next decision sees them, as in the simulator
        and the engine plug-in, where a call finishes before the next step admits."""
        if ticket.entry is not None:
            self.core.release(ticket.entry)
        if ticket.engine is not None and self.caps.on:
            tokens = ticket.call.completion_tokens - ticket.granted_tokens
            self.caps.released(ticket.engine.name, tokens)
        ticket.engine = None
        ticket.on_preempt = None
        # Nobody waiting: nothing to hand on (a call that comes later finds the slot free).
        if len(self.core.queue) and not self._dispatch_pending:
            self._dispatch_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch_soon)

    def forget(self, ticket: Ticket) -> None:
        """The ticket's call is over: drop its place in the core, so the ticket and its entry
        (which point at each other) are freed at once by reference counting, not left for the
        cyclic collector (which may have frozen them; ``proxy.upkeep``)."""
        ticket.entry = None

    def _dispatch_soon(self) -> None:
        self._dispatch_pending = False
        self.dispatch()

    def reprioritized(self, ticket: Ticket, priority: Priority) -> None:
        """A running call was served and the policy answered ``priority``. Its program's
        (with a tenant-scoped policy, its tenant's) waiting calls are ranked again, and if
        its own priority changed (demotion), a waiting call may now outrank it."""
        changed = priority != ticket.priority
        ticket.priority = priority
        entry = ticket.entry
        if entry is None:
            return
        if changed:
            self.core.rerank_running(entry, priority)
        self.core.queue.touch(ticket.program, self.clock())
        # Unchanged, nothing to look at again: service only lowers the waiting calls' ranks.
        if changed and self.config.preempt and entry.engine is not None and len(self.core.queue):
            now = self.clock()
            best = self.core.best_waiting_for(entry.engine, now)
            if best is not None:
                self._consider_preemption(best, now)

    def program_changed(self, program: Program) -> None:
        """``program``'s records changed (a call of it finished): its waiting calls, and with
        a tenant-scoped policy its tenant's, are ranked again, and the best waiting call may
        now outrank a running one."""
        if len(self.core.queue):
            now = self.clock()
            self.core.queue.touch(program, now)
            self._recheck(now)

    def _recheck(self, now: float | None = None) -> None:
        """Look again at whether the best waiting call may preempt: after its rank improved,
        or once a running call it outranks has had its quantum."""
        if not self.config.preempt or not len(self.core.queue):
            return
        now = self.clock() if now is None else now
        best = self.core.queue.peek(now)
        if best is not None:
            self._consider_preemption(best, now)

    def dispatch(self) -> None:
        """Give free slots to the best waiting calls."""
        if not len(self.core.queue):
            return
        self._sync()
        now = self.clock()
        for grant in self.core.dispatch(now, alive=_alive):
            self._apply(grant)  # at once: an error deciding the next one loses no grant
        if self._degraded:
            self._fail_stranded()
        self._recheck(now)

    # -- internals -----------------------------------------------------------------------------

    def _check_model(self, model: str | None) -> None:
        """Raise the pool's NotFound / ServiceUnavailable, with its clear message, unless a
        healthy engine serves ``model`` (looked up without building the pool's lists)."""
        for state in self.pool.engines.values():
            if state.healthy and (
                model is None or (state.models is not None and model in state.models)
            ):
                return
        self.pool.serving(model)

    def _sync(self) -> None:
        """Mirror the pool's engines (health, models, cap, own queue) into the core."""
        adaptive = self.config.adaptive
        degraded = False
        caps = self.caps if self.caps.on else None
        now = 0.0
        if caps is not None:
            now = self.clock()
            caps.sample(now, self._produced(), len(self.core.queue))
        core_engines = self.core.engines
        for state in self.pool.engines.values():
            models = state.models
            healthy = state.healthy
            if not healthy or models is None:
                degraded = True
            name = state.backend.name
            slots = core_engines.get(name) or self.core.engine(name)
            cap = state.backend.config.max_inflight
            if caps is not None:
                retains = state.backend.config.kv_evict == "rank"
                cap = caps.cap(name, cap, now, retains=retains)
            slots.cap = cap
            slots.models = models
            # Adaptive: the engine queues calls itself, so ours would only wait there, unordered.
            held_back = adaptive and len(slots.running) > 0 and (state.load.waiting or 0) > 0
            slots.open = healthy and not held_back
        # With every engine healthy, its models known and every waiting model served, no
        # waiting call can be stranded. Nothing waiting (the usual acquire): nothing to check.
        self._degraded = degraded or (len(self.core.queue) > 0 and self._lane_unserved())

    def _lane_unserved(self) -> bool:
        """A model some call waits for that no engine serves (every engine healthy)."""
        served: set[str] = set()
        for state in self.pool.engines.values():
            if state.models is not None:
                served |= state.models
        return any(isinstance(lane, str) and lane not in served for lane in self.core.queue.lanes())

    def _produced(self) -> Iterator[tuple[str, int, int]]:
        """Per engine: the calls held there and the tokens they produced since their grants."""
        for name, slots in self.core.engines.items():
            tokens = sum(
                w.item.call.completion_tokens - w.item.granted_tokens for w in slots.running
            )
            yield name, len(slots.running), tokens

    def _pick(
        self, slots: list[EngineSlots[Ticket]], entry: Waiting[Ticket]
    ) -> EngineSlots[Ticket]:
        # The balancer chooses, once per call; the gate's own count of the calls it holds
        # there is exact, the engine's reported queue as fresh as its last poll.
        engines = self.pool.engines
        loads = []
        for s in slots:
            load = engines[s.name].load
            loads.append(EngineLoad(len(s.running), load.waiting, load.kv_usage, s.name))
        ticket = entry.item
        choice = self.router.pick(
            loads,
            program=ticket.program.id,
            prompt_tokens=ticket.call.prompt_tokens,
            affinity=ticket.program.engine,
            blocks=ticket.blocks,
            now=self.clock(),
            model=ticket.model,
        )
        return slots[choice]

    def _apply(self, grant: Grant[Ticket]) -> EngineState:
        ticket = grant.entry.item
        engine = self.pool.engines[grant.engine]
        ticket.engine = engine
        ticket.priority = grant.entry.rank
        ticket.granted_tokens = ticket.call.completion_tokens
        if ticket.future is not None and not ticket.future.done():
            ticket.future.set_result(engine)
        return engine

    def _arm(self, at: float, now: float) -> None:
        """Look again at ``at`` (a running call's quantum ends, or a waiting call's
        anti-starvation deadline passes): one timer at a time, the earliest."""
        if at == INF or (self._armed is not None and self._armed_at <= at):
            return
        if self._armed is not None:
            self._armed.cancel()
        self._armed_at = at
        self._armed = asyncio.get_running_loop().call_later(max(0.0, at - now), self._fire)

    def _fire(self) -> None:
        self._armed = None
        self._armed_at = INF
        self._recheck()

    def _fail_stranded(self) -> None:
        """Calls waiting for a model that no healthy engine serves any more fail now, with the
        pool's own error, rather than wait for an engine that may never come back."""
        queue = self.core.queue
        for lane in queue.lanes():
            try:
                self.pool.check(lane if isinstance(lane, str) else None)
            except Exception as exc:
                now = self.clock()
                while (w := queue.head(lane, now)) is not None:
                    queue.remove(w)
                    future = w.item.future
                    if future is not None and not future.done():
                        future.set_exception(exc)

    def _consider_preemption(self, entry: Waiting[Ticket], now: float) -> None:
        if not self.config.preempt:
            return
        victim, ready_at = self.core.victim(entry, now, _preemptible)
        if victim is None:
            self._arm(min(ready_at, self.core.queue.next_due()), now)
            return
        ticket = victim.item
        ticket.preempt_requested = True
        self.preemptions += 1
        if self._on_preempt is not None:
            self._on_preempt(ticket)
        assert ticket.on_preempt is not None  # _preemptible checked it
        ticket.on_preempt()


def _alive(ticket: Ticket) -> bool:
    return ticket.future is None or not ticket.future.done()


def _preemptible(ticket: Ticket) -> bool:
    return ticket.preemptible and not ticket.preempt_requested and ticket.on_preempt is not None
