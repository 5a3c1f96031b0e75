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

import bisect
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Generic, Protocol, TypeVar

from proxy.policies.base import Policy, Priority
from proxy.policies.levels import Levels
from proxy.records import Call, CallState, Program
from proxy.table import TableConfig

# (level, key, group, arrival order): the waiting queue's order, best first.
SortKey = tuple[int, float, str, int]

_TABLE_DEFAULTS = TableConfig()
IDLE_PROGRAMS = 4096  # idle programs remembered (their creation order and service)


@dataclass(frozen=True, slots=True)
class ServiceCost:
    """The proxy's default service unit, estimated engine seconds: ``prompt_tokens *
    prefill_token_s + output_tokens * decode_token_s``, the prompt charged once its prefill is
    done (at the first output token). Recomputation after a preemption is not charged: it is
    the engine's waste, not work the call attained. Defaults follow ``TableConfig``."""

    decode_token_s: float = _TABLE_DEFAULTS.decode_token_s
    prefill_token_s: float = _TABLE_DEFAULTS.prefill_token_s

    def of(self, *, prompt_tokens: int, output_tokens: int) -> float:
        prefill = prompt_tokens if output_tokens > 0 else 0
        return prefill * self.prefill_token_s + output_tokens * self.decode_token_s


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

    @property
    def sort_key(self) -> SortKey:
        return (self.rank.level, self.rank.key, self.rank.group, self.seq)


class CallBook:
    """The engine's calls and programs, ranked by the policy. Time comes from the caller."""

    def __init__(self, *, policy: Policy, levels: Levels, cost: ServiceCost) -> None:
        self.policy, self.levels, self.cost = policy, levels, cost
        self._calls: dict[str, Tracked] = {}
        self._by_call: dict[str, set[str]] = {}  # the proxy's call id -> request ids
        self._programs: dict[str, Program] = {}  # with calls in this engine
        self._idle: OrderedDict[str, Program] = OrderedDict()
        self._seq = 0

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
        program.service = program.critical_path = tags.service
        program.last_arrival = now
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
        self._seq += 1
        tracked = Tracked(request_id, call, program, self._seq, rank)
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
        call = tracked.call
        if call.queued_since is not None:
            call.wait += max(0.0, now - call.queued_since)
            call.queued_since = None
        if call.started_at is None:
            call.started_at = now
        call.state = CallState.RUNNING
        tracked.admitted_at = output_tokens

    def preempted(self, request_id: str, *, now: float) -> None:
        tracked = self._calls.get(request_id)
        if tracked is None:
            return
        tracked.call.state = CallState.PREEMPTED
        tracked.call.queued_since = now
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
        if call.queued_since is not None:
            call.wait += max(0.0, now - call.queued_since)
            call.queued_since = None
        call.state = CallState.DONE if ok else CallState.FAILED
        call.finished_at = now
        self.policy.on_finish(call=call, program=program, now=now)
        program.active.pop(call.id, None)
        program.wait += call.wait
        program.last_completion = now
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

    def set_program_service(self, program_id: str, service: float) -> list[str]:
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
        return touched

    def set_call_level(self, call_id: str, level: int) -> list[str]:
        """Pin a call (the proxy's call id) to ``level`` from its present service on."""
        touched = sorted(self._by_call.get(call_id, ()))
        for request_id in touched:
            tracked = self._calls[request_id]
            tracked.pin = Pin(self._clamp(level), tracked.call.service)
            self._apply_pin(tracked)
        return touched

    def sort_key(self, request_id: str) -> SortKey | None:
        tracked = self._calls.get(request_id)
        return None if tracked is None else tracked.sort_key


class HasRequestId(Protocol):
    @property
    def request_id(self) -> str: ...


R = TypeVar("R", bound=HasRequestId)


class PolicyQueue(Generic[R]):
    """vLLM's ``RequestQueue`` interface (by shape: vLLM is not imported here), ordered by a key
    the caller computes from the book. Keys change as time passes and calls are served, so the
    owner calls ``resort`` once per scheduling step after re-ranking; between steps, arrivals
    and preempted calls are inserted in order. "Prepend" is an insert by key, as in vLLM's own
    priority queue: where a preempted call goes back is the policy's decision."""

    def __init__(self, key: Callable[[R], SortKey]) -> None:
        self._key = key
        self._items: list[tuple[SortKey, R]] = []

    def resort(self) -> None:
        self._items = sorted(((self._key(r), r) for _, r in self._items), key=itemgetter(0))

    def add_request(self, request: R) -> None:
        bisect.insort(self._items, (self._key(request), request), key=itemgetter(0))

    def pop_request(self) -> R:
        if not self._items:
            raise IndexError("pop from an empty queue")
        return self._items.pop(0)[1]

    def peek_request(self) -> R:
        if not self._items:
            raise IndexError("peek from an empty queue")
        return self._items[0][1]

    def prepend_request(self, request: R) -> None:
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[R]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: R) -> None:
        for i, (_, queued) in enumerate(self._items):
            if queued is request:
                del self._items[i]
                return
        raise ValueError(f"request {request.request_id} is not queued")

    def remove_requests(self, requests: Iterable[R]) -> None:
        gone = {id(r) for r in requests}
        self._items = [item for item in self._items if id(item[1]) not in gone]

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[R]:
        return iter([r for _, r in self._items])


def choose_victims(
    *,
    waiting: Sequence[str],
    running: Sequence[str],
    keys: Mapping[str, SortKey],
    free_slots: int,
    passed_over: Collection[str],
    preemptible: Collection[str],
) -> list[tuple[str, str]]:
    """Which running calls to preempt, and for whom: ``(victim, beneficiary)`` pairs.

    ``waiting`` is best first; ``keys`` ranks both lists. A waiting call claims a free slot if
    there is one and it has not been passed over yet (its first chance to be admitted the
    ordinary way). Otherwise it takes the place of the worst preemptible running call, but only
    if it sits in a strictly better level: within a level calls run FCFS, and preempting for a
    small difference is the thrashing that discretizing into levels is there to avoid. A call
    is preemptible once it has had its minimum quantum since its last admission (the caller's
    ``preemptible``), so every admission makes progress and preemption cannot livelock.
    """
    candidates = sorted((r for r in running if r in preemptible), key=lambda r: keys[r])
    victims: list[tuple[str, str]] = []
    for request_id in waiting:
        if free_slots > 0 and request_id not in passed_over:
            free_slots -= 1
            continue
        if not candidates or keys[request_id][0] >= keys[candidates[-1]][0]:
            break  # the rest of the queue ranks no better than this one
        victims.append((candidates.pop(), request_id))
    return victims
