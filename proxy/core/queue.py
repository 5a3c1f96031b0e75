"""Waiting calls ranked by the policy, re-ranked only when a rank can change.

A ``RankedQueue`` keeps its waiting calls in heaps by ``(priority, seq)``: the policy's
``Priority``, then the order the calls first queued (FCFS among equals). A call's rank is asked
of the policy when it queues and again only when something that can change it happens:

- its program's (or tenant's) records changed: a sibling was served or finished, which moves
  ATLAS's critical path, a program's wait or a tenant floor (``touch``); with a "tenant"
  scope, also when a new call of its tenant arrived (``entry``: the tenant's calls in flight
  count in a tenant floor's in-level key);
- its anti-starvation deadline passed: the policy says until when a waiting call's rank holds
  (``stable_until``), and those deadlines sit in a heap of their own.

So a decision costs O(log n) in the queue length, not the O(n) of re-ranking every call.
Which records a rank depends on is the policy's to declare (``rank_scope``): "call" (only the
call itself and time), "program", "tenant", or "global", the default for a policy that declares
nothing, for which the queue re-ranks every call before each decision, as a plug-in that may
read anything must be.

Entries are never searched for: a re-rank pushes a new heap item and bumps the entry's version,
and stale items are skipped when they surface (the heap is rebuilt when they outnumber the
live ones). Calls are queued in ``lanes`` (the live gate keeps one per model) and a decision
looks at the heads of the lanes it can serve.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from proxy.policies.base import Policy, Priority
from proxy.records import Call, Program

T = TypeVar("T")
Scope = Literal["call", "program", "tenant", "global"]
_SCOPES: tuple[Scope, ...] = ("call", "program", "tenant", "global")
INF = math.inf
_TOP = Priority(0)


def rank_scope(policy: Policy) -> Scope:
    """What a waiting call's rank depends on besides itself and time (the policy's own
    declaration, ``rank_scope``; "global" when it declares nothing)."""
    scope = getattr(policy, "rank_scope", "global")
    for known in _SCOPES:
        if scope == known:
            return known
    return "global"


@dataclass(slots=True, eq=False)
class Waiting(Generic[T]):
    """One call's place in the queue, kept across leaving and re-entering it."""

    call: Call
    program: Program
    item: T
    seq: int
    lane: Hashable = None
    rank: Priority = _TOP
    version: int = 0  # bumped at each re-rank: heap items with an older one are stale
    due: float = INF  # when the rank may next change by itself (anti-starvation)
    due_version: int = 0
    queued: bool = False
    engine: str | None = None  # where it runs, while admitted (``Admission``)
    admitted_at: float | None = None

    @property
    def order(self) -> tuple[Priority, int]:
        return (self.rank, self.seq)


Ranker = Callable[[Waiting[T], float], Priority]
_Item = tuple[Priority, int, int, Waiting[T]]
_Due = tuple[float, int, int, Waiting[T]]


class RankedQueue(Generic[T]):
    """The waiting calls of one mechanism (a gate, an engine), best first.

    ``ranker`` gives a waiting call's rank at ``now`` (default: the policy's ``priority``; the
    vLLM plug-in adds the proxy's explicit levels on top)."""

    def __init__(self, policy: Policy, *, ranker: Ranker[T] | None = None) -> None:
        self.policy = policy
        self.scope: Scope = rank_scope(policy)
        self._ranker: Ranker[T] = ranker or self._policy_rank
        stable = getattr(policy, "stable_until", None)
        self._stable: Callable[..., float] | None = stable if self.scope != "global" else None
        self._heaps: dict[Hashable, list[_Item[T]]] = {}
        self._live: dict[Hashable, int] = {}
        self._due: list[_Due[T]] = []
        self._by_program: dict[str, set[Waiting[T]]] = {}
        self._by_tenant: dict[str, set[Waiting[T]]] = {}
        # Tenants with a call that arrived since their waiting calls were last ranked: they
        # are ranked again at the next look (``advance``), which always comes with a ``now``.
        self._arrived: set[str] = set()
        self._seq = 0
        self._size = 0
        self.reranks = 0  # how many times a waiting call was asked its rank again

    # -- entries -----------------------------------------------------------------------------

    def entry(self, call: Call, program: Program, item: T, *, lane: Hashable = None) -> Waiting[T]:
        """A new entry, not queued yet; its ``seq`` (FCFS order) is fixed here for good. Every
        mechanism makes it right after the policy's ``on_arrival``, so under a "tenant" scope
        it also marks the tenant's waiting calls for a re-rank."""
        if self.scope == "tenant" and program.tenant in self._by_tenant:
            self._arrived.add(program.tenant)
        self._seq += 1
        return Waiting(call, program, item, self._seq, lane)

    def rank(self, w: Waiting[T], now: float) -> Priority:
        """``w``'s rank at ``now`` as this queue would give it (nothing is changed)."""
        return self._ranker(w, now)

    def push(self, w: Waiting[T], now: float, *, rank: Priority | None = None) -> None:
        """Queue ``w`` (ranked now unless ``rank`` is given)."""
        if w.queued:
            return
        w.queued = True
        self._size += 1
        self._live[w.lane] = self._live.get(w.lane, 0) + 1
        if self.scope == "program" or self.scope == "tenant":
            self._by_program.setdefault(w.program.id, set()).add(w)
        if self.scope == "tenant":
            self._by_tenant.setdefault(w.program.tenant, set()).add(w)
        w.rank = rank if rank is not None else self._ranker(w, now)
        w.version += 1
        heapq.heappush(self._heaps.setdefault(w.lane, []), (w.rank, w.seq, w.version, w))
        self._set_due(w, now)

    def remove(self, w: Waiting[T]) -> bool:
        """Take ``w`` out of the queue (granted, cancelled); False if it was not queued."""
        if not w.queued:
            return False
        w.queued = False
        w.version += 1
        w.due_version += 1
        w.due = INF
        self._size -= 1
        live = self._live[w.lane] = self._live[w.lane] - 1
        scope = self.scope
        if scope == "program" or scope == "tenant":
            self._discard(self._by_program, w.program.id, w)
            if scope == "tenant":
                self._discard(self._by_tenant, w.program.tenant, w)
        if len(self._heaps[w.lane]) > 2 * live + 64:
            self._rebuild(w.lane)
        return True

    # -- decisions ---------------------------------------------------------------------------

    def peek(self, now: float, lanes: Iterable[Hashable] | None = None) -> Waiting[T] | None:
        """The best waiting call at ``now`` among ``lanes`` (all lanes if None)."""
        self.advance(now)
        best: Waiting[T] | None = None
        for lane in self._heaps if lanes is None else lanes:
            head = self._head(lane)
            if head is not None and (best is None or head.order < best.order):
                best = head
        return best

    def pop(self, now: float, lanes: Iterable[Hashable] | None = None) -> Waiting[T] | None:
        best = self.peek(now, lanes)
        if best is not None:
            heapq.heappop(self._heaps[best.lane])  # it is its lane's head: no stale item left
            self.remove(best)
        return best

    def head(self, lane: Hashable, now: float) -> Waiting[T] | None:
        self.advance(now)
        return self._head(lane)

    def best(self, now: float, lane: Hashable = None) -> Iterator[Waiting[T]]:
        """The lane's waiting calls best first, lazily: O(log m) each for the first m. The
        queue must not change while the iterator is in use."""
        self.advance(now)
        heap = self._heaps.get(lane, [])
        if not heap:
            return
        frontier = [(heap[0][:3], 0)]
        while frontier:
            _, i = heapq.heappop(frontier)
            _, _, version, w = heap[i]
            if w.queued and version == w.version:
                yield w
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child][:3], child))

    def advance(self, now: float) -> None:
        """Apply every rank change due by ``now``: anti-starvation deadlines that passed, or,
        for a "global" policy, a re-rank of every waiting call."""
        if self._stable is None:
            if self._size:
                self.rerank_all(now)
            return
        # ``self._due`` is read afresh each turn: a re-rank may rebuild it.
        while self._due and self._due[0][0] <= now:
            at, _, version, w = heapq.heappop(self._due)
            if w.queued and version == w.due_version:
                w.due = INF  # its deadline item is spent: a new one must be pushed
                # Ranked as of its deadline, not of whenever the caller looks: what a promotion
                # records then depends on the events alone, not on how often decisions are made.
                self._rerank(w, at)
        if self._arrived:
            arrived, self._arrived = self._arrived, set()
            for tenant in arrived:
                self._rerank_group(self._by_tenant.get(tenant), now)

    def next_due(self) -> float:
        """The earliest time a waiting call's rank changes by itself (inf if none does)."""
        due = self._due
        while due:
            at, _, version, w = due[0]
            if w.queued and version == w.due_version:
                return at
            heapq.heappop(due)
        return INF

    def touch(self, program: Program, now: float) -> None:
        """``program``'s records changed (a call of it was served or finished): re-rank the
        waiting calls whose rank can depend on them."""
        if self.scope == "call" or self.scope == "global":
            return  # nothing to do, or re-ranked before every decision anyway
        self.advance(now)  # deadlines before ``now`` first, each at its own time
        if self.scope == "tenant":
            self._rerank_group(self._by_tenant.get(program.tenant), now)
        else:
            self._rerank_group(self._by_program.get(program.id), now)

    def rerank(self, w: Waiting[T], now: float) -> None:
        """Ask for one waiting call's rank again (its own records changed)."""
        if w.queued:
            self._rerank(w, now)

    def rerank_all(self, now: float) -> None:
        """Ask for every waiting call's rank again and rebuild the heaps (O(n))."""
        for lane, heap in self._heaps.items():
            fresh: list[_Item[T]] = []
            for _, _, version, w in heap:
                if w.queued and version == w.version:
                    self.reranks += 1
                    w.rank = self._ranker(w, now)
                    fresh.append((w.rank, w.seq, w.version, w))
            heapq.heapify(fresh)
            self._heaps[lane] = fresh

    def __len__(self) -> int:
        return self._size

    def lane_size(self, lane: Hashable) -> int:
        return self._live.get(lane, 0)

    def lanes(self) -> list[Hashable]:
        return [lane for lane, n in self._live.items() if n > 0]

    def __iter__(self) -> Iterator[Waiting[T]]:
        """Every waiting call, best first (O(n log n): for listings and tests)."""
        items = [w for heap in self._heaps.values() for *_, w in heap]
        live = {id(w): w for w in items if w.queued}
        return iter(sorted(live.values(), key=lambda w: w.order))

    # -- internals ---------------------------------------------------------------------------

    def _policy_rank(self, w: Waiting[T], now: float) -> Priority:
        return self.policy.priority(call=w.call, program=w.program, now=now)

    def _head(self, lane: Hashable) -> Waiting[T] | None:
        heap = self._heaps.get(lane)
        while heap:
            _, _, version, w = heap[0]
            if w.queued and version == w.version:
                return w
            heapq.heappop(heap)
        return None

    def _rerank(self, w: Waiting[T], now: float) -> None:
        self.reranks += 1
        rank = self._ranker(w, now)
        if rank != w.rank:
            w.rank = rank
            w.version += 1
            heap = self._heaps[w.lane]
            heapq.heappush(heap, (rank, w.seq, w.version, w))
            if len(heap) > 2 * self._live[w.lane] + 64:
                self._rebuild(w.lane)
        self._set_due(w, now)

    def _rerank_group(self, group: set[Waiting[T]] | None, now: float) -> None:
        if group:
            for w in list(group):
                self._rerank(w, now)

    def _set_due(self, w: Waiting[T], now: float) -> None:
        if self._stable is None:
            return
        due = self._stable(call=w.call, program=w.program, now=now)
        if due == w.due and due != INF:
            return
        w.due = due
        w.due_version += 1
        if due == INF:
            return
        if due <= now:  # rounding left the rank unchanged at its own deadline: look again later
            due = w.due = math.nextafter(now, INF)
        heapq.heappush(self._due, (due, w.seq, w.due_version, w))
        if len(self._due) > 2 * self._size + 64:
            self._due = [d for d in self._due if d[3].queued and d[2] == d[3].due_version]
            heapq.heapify(self._due)

    def _rebuild(self, lane: Hashable) -> None:
        heap = [item for item in self._heaps[lane] if item[3].queued and item[2] == item[3].version]
        heapq.heapify(heap)
        self._heaps[lane] = heap

    @staticmethod
    def _discard(index: dict[str, set[Waiting[T]]], key: str, w: Waiting[T]) -> None:
        group = index.get(key)
        if group is not None:
            group.discard(w)
            if not group:
                del index[key]
