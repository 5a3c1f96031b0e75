"""Upkeep of the process table without stalling the event loop: expiring idle programs in
batches, and keeping Python's cyclic garbage collector off the table's records.

Expiry: a sweep forgets at most ``batch`` programs at a time and yields to the event loop in
between, so forgetting a million programs costs many short pauses, not one long one.

Garbage collection:
A full (generation 2) collection walks every container object alive, so with a million
programs in the process table one pass takes hundreds of milliseconds, during which no request
moves. The table's records hold no reference cycles, so they never need that walk. After each
sweep of the table the proxy collects the young generations (cheap: only recent objects) and
then *freezes* everything that survived (``gc.freeze``, O(1)): frozen objects are never walked
again, so later automatic full collections only see what was created since.

The cost: cyclic garbage that was still alive at a freeze is reclaimed only when the frozen
set is unfrozen and collected, which the policy does now and then while the table is small
(``GcPolicy``). A proxy holding a huge table therefore keeps such garbage until its table
shrinks; the request path creates little of it (calls in flight at a freeze that later become
garbage in a cycle).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass

from proxy.records import Program
from proxy.table import ProcessTable

SWEEP_BATCH = 2_000  # programs forgotten between two yields (about a millisecond's work)


@dataclass(slots=True)
class GcPolicy:
    """When the survivors are frozen, and when the frozen set is walked again.

    What start-up built is frozen once by ``settle_heap``. ``after_sweep`` collects the young
    generations and freezes their survivors; while the table holds fewer than
    ``full_collect_below`` programs, at most once every ``full_every_s`` seconds of the
    caller's clock, it unfreezes everything and runs one full collection instead, so cyclic
    garbage caught in a freeze is reclaimed (that pass walks every object of a small process:
    a few milliseconds)."""

    full_collect_below: int = 10_000
    full_every_s: float = 600.0
    full_collections: int = 0
    freezes: int = 0
    _last_full: float | None = None

    def after_sweep(self, programs: int, now: float) -> None:
        """Called by the table's collector after each sweep, with the table's size."""
        due = self._last_full is None or now - self._last_full >= self.full_every_s
        if programs < self.full_collect_below and due:
            gc.unfreeze()
            gc.collect()
            self._last_full = now
            self.full_collections += 1
        else:
            gc.collect(1)
        gc.freeze()
        self.freezes += 1


def settle_heap() -> None:
    """Call once the server is up. A proxy allocates many short-lived objects per request
    and keeps a large heap that changes slowly (modules, config, the process table). With
    CPython's default thresholds the cycle collector runs every 700 allocations and walks
    the whole heap every few tens of thousands: measured at 64 connections, over a tenth of
    the proxy's CPU. What exists at start-up is frozen out of its sight, and the young
    generation is collected less often; reference counting still frees almost everything at
    once, so only garbage cycles wait a little longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def sweep(
    table: ProcessTable,
    clock: Callable[[], float],
    gc_policy: GcPolicy | None = None,
    *,
    batch: int = SWEEP_BATCH,
    on_forget: Callable[[Program], object] | None = None,
) -> int:
    """Forget the programs idle past their TTL, ``batch`` at a time with a yield in between
    (each passed to ``on_forget``); then let ``gc_policy`` tidy up. Returns how many were
    forgotten."""
    total = 0
    while True:
        n = table.collect(clock(), limit=batch, on_forget=on_forget)
        total += n
        if n < batch:
            break
        await asyncio.sleep(0)
    if gc_policy is not None:
        gc_policy.after_sweep(len(table), clock())
    return total
