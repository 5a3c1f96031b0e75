"""The engine side's pure half: its call book, the policy-ordered queue and the preemption rule.

Nothing here imports vLLM or reads a clock, so it is unit-tested on its own; ``scheduler``
feeds it vLLM's requests and applies its decisions with vLLM's own mechanisms.

The book is a small process table private to the engine: one ``Call`` per vLLM request, one
``Program`` per Autellix program with calls in this engine (plus a bounded memory of idle ones,
so a program keeps its place among others between calls). The proxy stays the authority on a
program's service: every call brings it along (``autellix_service``), and the control channel
can correct it while calls are queued or running. What the engine adds is what the proxy
cannot see quickly enough: the call's own service, token by token, and so its demotion.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from proxy.core import lifecycle
from proxy.core.cost import ServiceCost
from proxy.core.queue import RankedQueue, Waiting
from proxy.policies.base import Policy, Priority
from proxy.policies.levels import Levels
from proxy.records import Call, Program

# (level, key, group, arrival order): the waiting queue's order, best first.
SortKey = tuple[int, float, str, int]

IDLE_PROGRAMS = 4096  # idle programs remembered (their creation order and service)


@dataclass(frozen=True, slots=True)
class CallTags:
    """What the proxy told the engine about a request (its ``vllm_xargs``)."""

    program: str
    call: str
    thread: str = ""
    service: float = 0.0
    level: int | None = None


@dataclass(slots=True)
class Pin:
    """An explicit level from the proxy, and the call's service when it was set: the call then
    uses that level's quantum, and the next ones', before dropping, like any call entering it."""

    level: int
    service: float


@dataclass(slots=True)
class Tracked:
    """One vLLM request in the book."""

    request_id: str
    call: Call
    program: Program
    seq: int  # arrival order in this engine: the last tie-break
    rank: Priority
    pin: Pin | None = None
    seen_service: float = 0.0  # call.service when the policy last saw it
    admitted_at: int | None = None  # output tokens at its last admission; None while waiting
    entry: Waiting[Tracked] | None = field(default=None, repr=False)  # its place in the queue

    @property
    def sort_key(self) -> SortKey:
        return (self.rank.level, self.rank.key, self.rank.group, self.seq)


class CallBook:
    """The engine's calls and programs, ranked by the policy. Time comes from the caller.

    Waiting calls sit in the scheduling core's ``RankedQueue`` (``queue``), ranked by the
    policy and the proxy's explicit levels, and re-ranked when their rank can change."""

    def __init__(self, *, policy: Policy, levels: Levels, cost: ServiceCost) -> None:
        self.policy, self.levels, self.cost = policy, levels, cost
        self.queue: RankedQueue[Tracked] = RankedQueue(policy, ranker=self._waiting_rank)
        self._on_finish = lifecycle.policy_hook(policy)
        self._calls: dict[str, Tracked] = {}
        self._by_call: dict[str, set[str]] = {}  # the proxy's call id -> request ids
        self._programs: dict[str, Program] = {}  # with calls in this engine
        self._idle: OrderedDict[str, Program] = OrderedDict()

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._calls

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, request_id: str) -> Tracked | None:
        return self._calls.get(request_id)

    def programs(self) -> int:
        return len(self._programs)

    def _program(self, program_id: str, now: float) -> Program:
        program = self._programs.get(program_id) or self._idle.pop(program_id, None)
        if program is None:
            program = Program(id=program_id, created=now)
        self._programs[program_id] = program
        return program

    def arrive(
        self, *, request_id: str, tags: CallTags, prompt_tokens: int, arrival: float, now: float
    ) -> Tracked:
        program = self._program(tags.program, now)
        # The proxy's figure replaces the engine's own estimate: it has seen every engine.
        changed = (program.service, program.critical_path) != (tags.service, tags.service)
        program.service = program.critical_path = tags.service
        program.last_arrival = now
        if changed:  # the program's waiting calls rank from the new figure
            self.queue.touch(program, now)
        call = Call(
            id=tags.call,
            program_id=tags.program,
            arrival=arrival,
            thread=tags.thread,
            prompt_tokens=prompt_tokens,
            queued_since=now,
        )
        program.active[call.id] = call
        rank = self.policy.on_arrival(call=call, program=program, now=now)
        tracked = Tracked(request_id, call, program, 0, rank)
        tracked.entry = self.queue.entry(call, program, tracked)
        tracked.seq = tracked.entry.seq
        if tags.level is not None:
            tracked.pin = Pin(self._clamp(tags.level), 0.0)
            self._apply_pin(tracked)
        self._calls[request_id] = tracked
        self._by_call.setdefault(call.id, set()).add(request_id)
        return tracked

    def refresh(
        self, request_id: str, *, prompt_tokens: int, output_tokens: int, now: float
    ) -> Priority | None:
        """Re-rank a call from its latest token counts (anti-starvation moves with time, too)."""
        tracked = self._calls.get(request_id)
        if tracked is None:
            return None
        call = tracked.call
        call.prompt_tokens, call.completion_tokens = prompt_tokens, output_tokens
        call.service = self.cost.of(prompt_tokens=prompt_tokens, output_tokens=output_tokens)
        served = call.service != tracked.seen_service
        tracked.seen_service = call.service
        hook = self.policy.on_service if served else self.policy.priority
        tracked.rank = hook(call=call, program=tracked.program, now=now)
        self._apply_pin(tracked)
        if served:  # its program's waiting calls may rank differently now (ATLAS)
            self.queue.touch(tracked.program, now)
        return tracked.rank

    def _waiting_rank(self, w: Waiting[Tracked], now: float) -> Priority:
        tracked = w.item
        tracked.rank = self.policy.priority(call=tracked.call, program=tracked.program, now=now)
        self._apply_pin(tracked)
        return tracked.rank

    def _clamp(self, level: int) -> int:
        return max(0, min(level, self.levels.count - 1))

    def _apply_pin(self, tracked: Tracked) -> None:
        pin = tracked.pin
        if pin is None:
            return
        level, used, last = pin.level, tracked.call.service - pin.service, self.levels.count - 1
        while level < last and used >= self.levels.quantum(level):
            used -= self.levels.quantum(level)
            level += 1
        tracked.rank = Priority(level, tracked.rank.key, tracked.rank.group)
        tracked.call.level = level

    def admitted(self, request_id: str, *, output_tokens: int, now: float) -> None:
        tracked = self._calls.get(request_id)
        if tracked is None:
            return
        lifecycle.admitted(tracked.call, now)
        tracked.admitted_at = output_tokens

    def preempted(self, request_id: str, *, now: float) -> None:
        tracked = self._calls.get(request_id)
        if tracked is None:
            return
        lifecycle.preempted(tracked.call, now)
        tracked.admitted_at = None

    def served_since_admission(self, request_id: str, output_tokens: int) -> int | None:
        """Tokens generated since the call was last admitted (None if it is not running)."""
        tracked = self._calls.get(request_id)
        if tracked is None or tracked.admitted_at is None:
            return None
        return output_tokens - tracked.admitted_at

    def finish(self, request_id: str, *, now: float, ok: bool) -> Tracked | None:
        tracked = self._calls.pop(request_id, None)
        if tracked is None:
            return None
        call, program = tracked.call, tracked.program
        if tracked.entry is not None:
            self.queue.remove(tracked.entry)
        # As the process table charges it: a successful call's prompt counts even with no output.
        call.service = self.cost.of(
            prompt_tokens=call.prompt_tokens, output_tokens=call.completion_tokens, done=ok
        )
        lifecycle.closed(call, now, ok=ok)
        lifecycle.finished(self._on_finish, call, program, now)
        self.queue.touch(program, now)
        ids = self._by_call.get(call.id)
        if ids is not None:
            ids.discard(request_id)
            if not ids:
                del self._by_call[call.id]
        if not program.active:
            del self._programs[program.id]
            self._idle[program.id] = program
            while len(self._idle) > IDLE_PROGRAMS:
                self._idle.popitem(last=False)
        return tracked

    def set_program_service(self, program_id: str, service: float, *, now: float) -> list[str]:
        """The proxy's newer figure for a program: its queued and running calls start from it
        again (any explicit level they had is superseded). Returns the request ids touched."""
        program = self._programs.get(program_id)
        if program is None:
            idle = self._idle.get(program_id)
            if idle is not None:
                idle.service = idle.critical_path = service
            return []
        program.service = program.critical_path = service
        touched = []
        for tracked in self._calls.values():
            if tracked.program is program:
                tracked.call.start_service = service
                tracked.pin = None
                touched.append(tracked.request_id)
                self._rerank_waiting(tracked, now)
        return touched

    def _rerank_waiting(self, tracked: Tracked, now: float) -> None:
        if tracked.entry is not None and tracked.entry.queued:
            self.queue.rerank(tracked.entry, now)

    def set_call_level(self, call_id: str, level: int, *, now: float) -> list[str]:
        """Pin a call (the proxy's call id) to ``level`` from its present service on."""
        touched = sorted(self._by_call.get(call_id, ()))
        for request_id in touched:
            tracked = self._calls[request_id]
            tracked.pin = Pin(self._clamp(level), tracked.call.service)
            self._apply_pin(tracked)
            self._rerank_waiting(tracked, now)
        return touched

    def sort_key(self, request_id: str) -> SortKey | None:
        tracked = self._calls.get(request_id)
        return None if tracked is None else tracked.sort_key


class HasRequestId(Protocol):
    @property
    def request_id(self) -> str: ...


R = TypeVar("R", bound=HasRequestId)


class PolicyQueue(Generic[R]):
    """vLLM's ``RequestQueue`` interface (by shape: vLLM is not imported here) over the book's
    ``RankedQueue``: waiting requests in the policy's order, re-ranked by the core when their
    rank can change, so no step re-sorts the queue. "Prepend" is an insert by rank, as in vLLM's
    own priority queue: where a preempted call goes back is the policy's decision. A request
    the book does not know (its arrival failed) queues after every known one, by arrival.
    ``now`` is set by the owner before each step (the queue reads no clock)."""

    def __init__(self, book: CallBook) -> None:
        self.book = book
        self.now = 0.0
        self._requests: dict[str, R] = {}  # known and queued, by request id
        self._untracked: list[R] = []

    def add_request(self, request: R) -> None:
        tracked = self.book.get(request.request_id)
        if tracked is None or tracked.entry is None:
            self._untracked.append(request)
            return
        self._requests[request.request_id] = request
        self.book.queue.push(tracked.entry, self.now)

    def pop_request(self) -> R:
        request = self.peek_request()
        self.remove_request(request)
        tracked = self.book.get(request.request_id)
        if tracked is not None and hasattr(request, "priority"):
            # vLLM's own KV-pressure victim choice reads it: keep it the call's level.
            request.priority = tracked.rank.level
        return request

    def peek_request(self) -> R:
        head = self.book.queue.peek(self.now)
        if head is not None:
            return self._requests[head.item.request_id]
        if self._untracked:
            return self._untracked[0]
        raise IndexError("peek from an empty queue")

    def prepend_request(self, request: R) -> None:
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[R]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: R) -> None:
        if self._requests.pop(request.request_id, None) is not None:
            tracked = self.book.get(request.request_id)
            if tracked is not None and tracked.entry is not None:
                self.book.queue.remove(tracked.entry)
            return
        for i, queued in enumerate(self._untracked):
            if queued is request:
                del self._untracked[i]
                return
        raise ValueError(f"request {request.request_id} is not queued")

    def remove_requests(self, requests: Iterable[R]) -> None:
        # Those not queued here are skipped, as vLLM's own queues do: finishing a request asks
        # every waiting queue to drop it (a paused streaming session waits in another one).
        for request in list(requests):
            if request.request_id in self._requests or any(r is request for r in self._untracked):
                self.remove_request(request)

    def forget(self, request_id: str) -> None:
        """The request finished while queued (an abort): the book already dropped it."""
        self._requests.pop(request_id, None)

    def __bool__(self) -> bool:
        return bool(self._requests) or bool(self._untracked)

    def __len__(self) -> int:
        return len(self._requests) + len(self._untracked)

    def ids(self) -> set[str]:
        """The queued requests' ids, in no order (no sort)."""
        return {*self._requests, *(r.request_id for r in self._untracked)}

    def best_ids(self) -> Iterator[str]:
        """The queued requests' ids, best first, lazily: O(log n) each for the first m (the
        untracked ones last). The queue must not change while it is walked."""
        for w in self.book.queue.best(self.now):
            yield w.item.request_id
        for request in self._untracked:
            yield request.request_id

    def __iter__(self) -> Iterator[R]:
        self.book.queue.advance(self.now)  # ranks as of the step being decided
        ranked = [self._requests[w.item.request_id] for w in self.book.queue]
        return iter(ranked + self._untracked)
