"""Cost of one scheduling decision and of one admission, and the event loop's worst stall with a
million programs in the process table.

    .venv/bin/python benchmarks/bench_scheduler.py [--sizes 100,1000,10000,100000]
        [--decisions 2000] [--programs 1000000] [--floor-sizes 100,1000,10000]
        [--floor-old-max 1000] [--floor-only]

Decision: the live gate's ``release`` of a held slot and the dispatch that follows it, until the
next waiting call has the slot (including any anti-starvation deadlines that came due). Admission: a new call's
``acquire`` until it is queued (ranked, queued, preemption considered). Both run on the real
``Gate`` over one engine whose only slot is always taken, with ``n`` calls waiting, PLAS or ATLAS
with their default levels and anti-starvation, programs of varied attained service, and a clock
that moves 1 ms per operation. Medians over ``--decisions`` operations, timed after ``n``
untimed ones, so that the queue holds calls of every age (steady state: about one
anti-starvation promotion per decision).

Tenant floor: the decision cost of PLAS and ATLAS with the floor that client keys turn on,
beside the same run without a floor (ratio), with a decision that also finishes the holder, as
the request path does (that is what moves the floor). Tenants hold 10 waiting calls each, or
there are 100 of them; "old" is the full re-rank the floor needed before it ranked by tenant.

Stall: a million programs are created (each one call, begun and finished, in batches of 500 per
event-loop turn, as requests would; the collector sweeps after every 10,000), then all expire;
a ticker task records the longest gap between its wake-ups. Run twice in the same process: with the table upkeep the proxy runs
(batched expiry, ``GcPolicy``) and with the old one (one ``collect`` call, default GC), for the
ratio. The last line is

    decision_us_p50_at_10k=<n> admission_us_p50_at_10k=<n> max_stall_ms_1m=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.core import lifecycle
from proxy.gate import Gate, GateConfig, Ticket
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Policy
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program
from proxy.table import ProcessTable, TableConfig
from proxy.upkeep import GcPolicy, settle_heap, sweep

DEFAULT_THRESHOLDS = gc.get_threshold()
# The collector sweeps every 15 s; 10,000 new programs between two sweeps is 670 a second.
SWEEP_EVERY = 10_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _gate(policy: Policy) -> tuple[Gate, Clock]:
    engine = EngineConfig(name="e", url="http://e", models=["m"], max_inflight=1)
    clock = Clock()
    gate = Gate(EnginePool([make_backend(engine)]), policy, GateConfig(preempt=True), clock)
    return gate, clock


def _start(gate: Gate, ticket: Ticket) -> Coroutine[Any, Any, EngineState]:
    """Run ``acquire`` until it waits (or returns at once, which the caller does not expect)."""
    coro = gate.acquire(ticket)
    with contextlib.suppress(StopIteration):
        coro.send(None)
    return coro


def _holder(gate: Gate) -> Ticket:
    (entry,) = gate.core.engines["e"].running
    return entry.item


async def _measure(
    policy: Policy,
    n: int,
    per_program: int,
    decisions: int,
    *,
    tenants: int = 1,
    account: bool = False,
    warmup: int | None = None,
) -> tuple[float, float, float]:
    """``tenants``: programs are spread at random over this many; ``account``: a decision
    also finishes the holder as the request path does (its policy's ``on_finish``, then the
    gate hears its program changed), which is what moves a tenant floor."""
    gate, clock = _gate(policy)
    rng = random.Random(0)
    programs: list[Program] = []
    counter = 0
    hook = lifecycle.policy_hook(policy)

    def ticket() -> Ticket:
        nonlocal counter
        counter += 1
        if not programs or len(programs[-1].active) >= per_program:
            service = rng.lognormvariate(0.0, 1.5)
            tenant = f"t{rng.randrange(tenants)}" if tenants > 1 else "t"
            program = Program(id=f"p{counter}", created=clock.now, tenant=tenant)
            program.service = program.critical_path = service
            programs.append(program)
        program = programs[-1]
        call = Call(id=f"c{counter}", program_id=program.id, arrival=clock.now)
        call.queued_since = clock.now
        program.active[call.id] = call
        policy.on_arrival(call=call, program=program, now=clock.now)
        return Ticket(call=call, program=program, model="m")

    waiting = [_start(gate, ticket()) for _ in range(n + 1)]  # one takes the slot at once
    assert gate.queued == n
    decision_ns: list[int] = []
    admission_ns: list[int] = []
    # As many decisions again as calls queued first, untimed: the queue then holds calls of
    # every age, as in steady state, rather than one backlog whose promotions all come due.
    warmup = n if warmup is None else warmup
    for i in range(warmup + decisions):
        if i == warmup:
            decision_ns.clear()
            admission_ns.clear()
            reranks = gate.core.queue.reranks
        holder = _holder(gate)
        if not account:
            holder.program.active.pop(holder.call.id, None)
        t0 = time.perf_counter_ns()
        gate.release(holder)
        if account:
            now = clock()
            lifecycle.closed(holder.call, now, ok=True)
            lifecycle.finished(hook, holder.call, holder.program, now)
            gate.program_changed(holder.program)
        gate.dispatch()  # what the loop runs once the releasing task yields
        decision_ns.append(time.perf_counter_ns() - t0)
        new = ticket()
        t0 = time.perf_counter_ns()
        waiting.append(_start(gate, new))
        admission_ns.append(time.perf_counter_ns() - t0)
    for coro in waiting:
        coro.close()
    per_decision = (gate.core.queue.reranks - reranks) / decisions
    return (
        statistics.median(decision_ns) / 1e3,
        statistics.median(admission_ns) / 1e3,
        per_decision,
    )


async def _stall(programs: int, *, upkeep: bool) -> float:
    """The longest gap, in ms, between a ticker's wake-ups while ``programs`` are created and
    then expire."""
    table = ProcessTable(TableConfig(max_programs=programs, idle_ttl_s=10.0))
    now = [0.0]
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            t = time.perf_counter()
            gaps.append(t - last)
            last = t

    gc_policy = GcPolicy()
    gc.collect()  # both runs start from a collected heap
    if upkeep:
        settle_heap()  # as the proxy does once it serves
    tick = asyncio.create_task(ticker())
    for i in range(programs):
        now[0] += 1e-6
        _, call = table.begin(f"prog-{i:07d}", now=now[0], prompt_tokens=700)
        table.start(call, "e", now[0])
        table.finish(call, now[0], prompt_tokens=700, completion_tokens=30)
        if i % 500 == 499:
            await asyncio.sleep(0)
        if upkeep and i % SWEEP_EVERY == SWEEP_EVERY - 1:  # the collector's turn
            await sweep(table, lambda: now[0], gc_policy)
    now[0] += 20.0
    if upkeep:
        gc_policy.full_collect_below = 0  # the expiry sweep, as it runs with a big table
        await sweep(table, lambda: now[0], gc_policy)
    else:
        table.collect(now[0])
        gc.collect()
    await asyncio.sleep(0)
    assert len(table) == 0
    done.set()
    await tick
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_THRESHOLDS)
    return max(gaps) * 1e3


_FULL_PASS = """
import time
from proxy.app import create_app
from proxy.config import EngineConfig, ProxyConfig
from proxy.server import resolve
from proxy.upkeep import GcPolicy, settle_heap

engine = EngineConfig(name="e", url="http://127.0.0.1:9", kind="openai", models=["m"])
app = create_app(resolve(ProxyConfig(engines=[engine])))
settle_heap()
t0 = time.perf_counter()
GcPolicy().after_sweep(0, 0.0)
print((time.perf_counter() - t0) * 1e3)
"""


def _small_full_pass() -> float:
    """The occasional full collection the upkeep runs once the table is small again, in ms,
    in a fresh process holding one proxy app (this process is full of the runs above)."""
    out = subprocess.run(
        [sys.executable, "-c", _FULL_PASS], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


# What client keys turn on (``with_tenant_fairness``): the floor at share 1 with a fair key.
FLOOR = TenantFloorConfig(share=1.0, fair_key=True)


def _floored(name: str, floor: TenantFloorConfig | None, *, old: bool = False) -> Policy:
    policy: Policy = (
        PLAS(PLASConfig(tenant_floor=floor))
        if name == "plas"
        else ATLAS(ATLASConfig(tenant_floor=floor))
    )
    if old:  # what the floor declared before it ranked by tenant: a full re-rank per decision
        policy.rank_scope = "global"  # type: ignore[attr-defined]
    return policy


async def _floor_table(sizes: list[int], decisions: int, old_max: int) -> None:
    """Decision cost with the tenant floor, beside the same run without it. A decision here
    finishes the holder (the floor moves then), so its tenant's waiting calls are ranked
    again: their number, not the queue's, sets the cost. Tenants: 10 waiting calls each
    (``n / 10`` tenants), or 100 tenants (``n / 100`` calls each); "old": the full re-rank
    the floor needed before, run up to ``old_max`` queued (with a shorter warm-up)."""
    print(
        f"\ntenant floor (share 1, fair key): decision = finish + release + dispatch\n"
        f"{'policy':<8}{'floor':<22}{'queued':>8}{'decision us':>13}{'re-ranks/dec':>14}"
        f"{'x no floor':>12}"
    )
    for name in ("plas", "atlas"):
        for n in sizes:
            base, _, reranks = await _measure(_floored(name, None), n, 1, decisions, account=True)
            print(f"{name:<8}{'none':<22}{n:>8}{base:>13.2f}{reranks:>14.2f}{1.0:>12.2f}")
            cases = [("10 calls/tenant", max(1, n // 10), False), ("100 tenants", 100, False)]
            if n <= old_max:
                cases.append(("100 tenants, old", 100, True))
            for label, tenants, old in cases:
                decision, _, reranks = await _measure(
                    _floored(name, FLOOR, old=old),
                    n,
                    1,
                    decisions,
                    tenants=tenants,
                    account=True,
                    warmup=min(n, 500) if old else None,
                )
                print(
                    f"{name:<8}{label:<22}{n:>8}{decision:>13.2f}{reranks:>14.2f}"
                    f"{decision / base:>12.2f}"
                )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--programs", type=int, default=1_000_000)
    parser.add_argument("--floor-sizes", default="100,1000,10000")
    parser.add_argument("--floor-old-max", type=int, default=1000)
    parser.add_argument("--floor-only", action="store_true", help="the tenant floor table only")
    args = parser.parse_args()
    floor_sizes = [int(s) for s in args.floor_sizes.split(",")]
    if args.floor_only:
        await _floor_table(floor_sizes, args.decisions, args.floor_old_max)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = [("plas", 1), ("atlas", 1), ("atlas", 100)]
    print(
        f"{'policy':<8}{'calls/prog':>11}{'queued':>9}{'decision us':>13}{'admission us':>14}"
        f"{'re-ranks/decision':>19}"
    )
    at_10k: tuple[float, float] | None = None
    for name, per_program in cases:
        for n in sizes:
            policy: Policy = PLAS() if name == "plas" else ATLAS()
            decision, admission, reranks = await _measure(policy, n, per_program, args.decisions)
            print(
                f"{name:<8}{per_program:>11}{n:>9}{decision:>13.2f}{admission:>14.2f}"
                f"{reranks:>19.2f}"
            )
            if n == 10_000 and name == "plas":
                at_10k = (decision, admission)
    await _floor_table(floor_sizes, args.decisions, args.floor_old_max)
    with_upkeep = await _stall(args.programs, upkeep=True)
    without = await _stall(args.programs, upkeep=False)
    print(
        f"worst event-loop stall with {args.programs:,} programs: {with_upkeep:.1f} ms with the "
        f"proxy's upkeep, {without:.1f} ms with one collect and default GC "
        f"({without / with_upkeep:.0f}x)"
    )
    print(
        f"the upkeep's occasional full collection once the table is small: "
        f"{_small_full_pass():.1f} ms"
    )
    decision, admission = at_10k if at_10k is not None else (float("nan"), float("nan"))
    print(
        f"decision_us_p50_at_10k={decision:.2f} admission_us_p50_at_10k={admission:.2f} "
        f"max_stall_ms_1m={with_upkeep:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
