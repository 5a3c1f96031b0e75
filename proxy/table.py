"""The process table: one ``Program`` per agent run, its active calls, what it has consumed.

Pure and synchronous (DESIGN.md rules 1 and 2): every method takes ``now`` from its caller,
and nothing here reads a clock or awaits. The request path drives a call through

    begin -> start -> tokens* -> (preempt -> start -> tokens*)* -> finish

and a background task calls ``collect`` now and then to forget idle programs.

The program-level service (PLAS ``service``, ATLAS ``critical_path``) is the scheduling
policy's to update: the table passes every finished call to the ``on_finish`` hook it was
given (a policy's ``on_finish(call, program, now)``) before it can release the program.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from proxy.core import lifecycle
from proxy.core.cost import DEFAULT_DECODE_TOKEN_S, DEFAULT_PREFILL_TOKEN_S, ServiceCost
from proxy.core.lifecycle import ENDED, FinishHook
from proxy.ids import IdGen
from proxy.intercept.tenant import DEFAULT_TENANT
from proxy.records import Call, CallState, Program
from proxy.shards import ShardedDict, ShardedLru

ServiceUnit = Literal["tokens-cost", "wall"]
SortKey = Literal["service", "last_arrival", "calls"]

_SORT_KEYS: dict[str, Callable[[Program], tuple[float, str]]] = {
    "service": lambda p: (p.service, p.id),
    "last_arrival": lambda p: (p.last_arrival, p.id),
    "calls": lambda p: (p.calls, p.id),
}


@dataclass(frozen=True, slots=True)
class TableConfig:
    """Process-table settings.

    ``service_unit``: what a call's service measures.
      "tokens-cost" (default): estimated engine execution seconds,
      ``prompt_tokens * prefill_token_s + completion_tokens * decode_token_s``; the same for
      a call whatever the load of the engine it ran on.
      "wall": seconds from the call's first streamed token to its last, excluding time it
      spent preempted; includes the slowdown of a busy engine.
    ``decode_token_s``: cost of one decode step (one generated token). Placeholder default
    0.015 s; pass the cost model of the engines in use.
    ``prefill_token_s``: cost of one prompt token. Placeholder default 1/40 of a decode step.
    ``idle_ttl_s``: a program with no active call is forgotten this long after its last
    call completed.
    ``max_programs``: most programs kept; when full, the least recently active idle program
    is evicted for a new one. If none is idle the new one is still accepted (see
    ``overflows``): programs with active calls are bounded by the calls in flight.
    """

    service_unit: ServiceUnit = "tokens-cost"
    decode_token_s: float = DEFAULT_DECODE_TOKEN_S
    prefill_token_s: float = DEFAULT_PREFILL_TOKEN_S
    idle_ttl_s: float = 600.0
    max_programs: int = 1_000_000

    @property
    def cost(self) -> ServiceCost:
        return ServiceCost(self.decode_token_s, self.prefill_token_s)


class ProcessTable:
    """Programs by id, their active calls, and the idle ones in order of last activity."""

    __slots__ = (
        "_cost",
        "_idle",
        "_ids",
        "_last_token",
        "_on_finish",
        "_programs",
        "collected",
        "config",
        "evicted",
        "overflows",
        "released",
    )

    def __init__(
        self,
        config: TableConfig | None = None,
        *,
        on_finish: FinishHook | None = None,
        ids: IdGen | None = None,
    ) -> None:
        self.config = config or TableConfig()
        if self.config.max_programs < 1 or self.config.idle_ttl_s < 0:
            raise ValueError("max_programs must be >= 1 and idle_ttl_s >= 0")
        self._on_finish = on_finish
        self._cost = self.config.cost
        self._ids = ids or IdGen()
        # Sharded: growing a million-entry dict would stall the event loop (proxy.shards).
        self._programs: ShardedDict[str, Program] = ShardedDict()
        # Idle programs by the time their last call completed, oldest first in each shard:
        # collecting and evicting pop from the old ends, so their cost is what they remove.
        self._idle: ShardedLru[str, Program] = ShardedLru()
        self._last_token: dict[str, float] = {}  # "wall" unit: call id -> last token time
        self.collected = 0  # forgotten after idle_ttl_s
        self.evicted = 0  # forgotten to make room
        self.released = 0  # ended by the client or deleted
        self.overflows = 0  # programs created while full with none idle

    def __len__(self) -> int:
        return len(self._programs)

    def __contains__(self, program_id: object) -> bool:
        return program_id in self._programs

    def __iter__(self) -> Iterator[Program]:
        return iter(self._programs.values())

    def get(self, program_id: str) -> Program | None:
        return self._programs.get(program_id)

    @property
    def idle(self) -> int:
        return len(self._idle)

    # -- the life of a call ----------------------------------------------------------------

    def begin(
        self,
        program_id: str,
        *,
        now: float,
        tenant: str = DEFAULT_TENANT,
        source: str = "new",
        thread: str = "",
        parents: tuple[str, ...] = (),
        prompt_tokens: int = 0,
        end: bool = False,
    ) -> tuple[Program, Call]:
        """A call arrived: find or create its program and add the call, queued, to the
        program's active calls. ``prompt_tokens`` is an estimate until ``finish``; ``end``
        marks the program for release once its active calls have all finished.

        The caller then asks its policy for the call's ``start_service`` and ``level``."""
        program = self._programs.get(program_id)
        if program is None:
            program = self._create(program_id, now, tenant, source)
        elif not program.active:
            del self._idle[program_id]
        call = Call(
            id=self._ids.next("call"),
            program_id=program_id,
            arrival=now,
            thread=thread,
            parents=parents,
            prompt_tokens=prompt_tokens,
            queued_since=now,
        )
        program.active[call.id] = call
        program.last_arrival = now
        program.calls += 1
        if end:
            program.ending = True
        return program, call

    def start(self, call: Call, engine: str, now: float) -> None:
        """The call was sent to ``engine``: its wait stops; the program's KV now lives there."""
        if call.state in ENDED:
            return
        lifecycle.admitted(call, now)
        call.engine = engine
        program = self._programs.get(call.program_id)
        if program is not None:
            program.engine = engine

    def tokens(self, call: Call, n: int, now: float) -> None:
        """``n`` more completion tokens streamed: the call's service grows at once, so a
        policy can demote a long call mid-stream."""
        if call.state in ENDED:
            return
        if call.queued_since is not None:  # tokens without start(): it is running after all
            lifecycle.stop_waiting(call, now)
            call.state = CallState.RUNNING
        call.completion_tokens += n
        if self.config.service_unit == "wall":
            last = self._last_token.get(call.id)
            if last is not None:
                call.service += max(0.0, now - last)
            self._last_token[call.id] = now
        else:
            call.service = self._cost.of(
                prompt_tokens=call.prompt_tokens, output_tokens=call.completion_tokens
            )

    def preempt(self, call: Call, now: float) -> None:
        """The call was taken off its engine and waits again until the next ``start``. The
        work redone on resumption (recompute) is the proxy's doing and is not charged."""
        if call.state in ENDED:
            return
        lifecycle.preempted(call, now)
        self._last_token.pop(call.id, None)

    def finish(
        self,
        call: Call,
        now: float,
        *,
        ok: bool = True,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> bool:
        """The call ended (``ok``: completed; else failed, cancelled or aborted), with the
        engine's usage if known. Adds it to its program's totals, hands it to the
        ``on_finish`` hook, and removes it from the active calls. Returns True if the
        program was released (it was marked ending and has no active call left).

        Calling it again for the same call does nothing and returns False."""
        if call.state in ENDED:
            return False
        lifecycle.closed(call, now, ok=ok)
        self._last_token.pop(call.id, None)
        if prompt_tokens is not None:
            call.prompt_tokens = prompt_tokens
        if completion_tokens is not None:
            call.completion_tokens = completion_tokens
        if self.config.service_unit == "tokens-cost":
            call.service = self._cost.of(
                prompt_tokens=call.prompt_tokens, output_tokens=call.completion_tokens, done=ok
            )
        program = self._programs.get(call.program_id)
        if program is None or call.id not in program.active:
            return False
        program.prompt_tokens += call.prompt_tokens
        program.completion_tokens += call.completion_tokens
        lifecycle.finished(self._on_finish, call, program, now)
        if program.active:
            return False
        if program.ending:
            del self._programs[program.id]
            self.released += 1
            return True
        self._idle[program.id] = program
        return False

    # -- forgetting --------------------------------------------------------------------------

    def collect(
        self,
        now: float,
        *,
        limit: int | None = None,
        on_forget: Callable[[Program], object] | None = None,
    ) -> int:
        """Forget programs idle for ``idle_ttl_s`` or more, at most ``limit`` of them (the
        caller yields between batches, so expiring a million programs never blocks the event
        loop for long); each is passed to ``on_forget`` (for the metrics). Return how many."""
        horizon = now - self.config.idle_ttl_s
        gone = self._idle.pop_while(
            lambda p: p.last_completion is None or p.last_completion <= horizon, limit
        )
        for program_id in gone:
            program = self._programs.pop(program_id)
            if on_forget is not None and program is not None:
                on_forget(program)
        self.collected += len(gone)
        return len(gone)

    def delete(self, program_id: str) -> Literal["deleted", "ending"] | None:
        """Forget a program now ("deleted"); one with active calls is marked ending instead
        and released when they finish ("ending"). None if there is no such program."""
        program = self._programs.get(program_id)
        if program is None:
            return None
        if program.active:
            program.ending = True
            return "ending"
        del self._programs[program_id]
        self._idle.pop(program_id, None)
        self.released += 1
        return "deleted"

    # -- listing -------------------------------------------------------------------------------

    def page(
        self,
        *,
        sort: SortKey = "last_arrival",
        descending: bool = True,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Program]:
        """Programs ordered by ``sort`` (ties by id), ``limit`` of them from ``offset``.
        Costs O(n log(offset + limit)) for n programs."""
        key = _SORT_KEYS[sort]
        pick = heapq.nlargest if descending else heapq.nsmallest
        top = pick(offset + limit, self._programs.values(), key=key)
        return list(itertools.islice(top, offset, None))

    # -- internals -----------------------------------------------------------------------------

    def _create(self, program_id: str, now: float, tenant: str, source: str) -> Program:
        if len(self._programs) >= self.config.max_programs:
            if len(self._idle):
                shard, _, _ = min(
                    self._idle.heads(), key=lambda head: head[2].last_completion or 0.0
                )
                old_id, _ = self._idle.pop_head(shard)
                del self._programs[old_id]
                self.evicted += 1
            else:
                self.overflows += 1
        program = Program(id=program_id, created=now, tenant=tenant, identified_by=source)
        self._programs[program_id] = program
        return program
