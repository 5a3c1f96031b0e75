"""Several engines: the Autellix and prefix-aware balancers against round-robin and least-loaded.

The paper reports up to 1.4x throughput over round-robin and least-used balancing with 4
engines. This runs the simulator (``proxy/sim``) with ``--engines`` A100 engines behind each
balancer, the same policy on all (PLAS for chatbot and ReAct, ATLAS for LATS and mixed: the
paper's pairing) and the same programs at each rate (one seed), and prints each balancer's mean
program token latency against the arrival rate, then the rate each sustains at a latency target
(``--latency-factor`` x round-robin's latency at the lowest rate, read as ``autellix bench``
reads it: steady, a point whose engines served under 90% of the offered work counting as over
the target; and finite run, every point as measured), the ratios of the Autellix and
prefix-aware balancers' rates to the others'. Then a refinement pass bisects each balancer's
steady capacity (the highest rate its engines keep up with) between the grid points that
bracket it, ``--refine`` times, for each of ``--seeds`` seeds, until the bracket is narrower
than ``--tolerance`` (2%) of the rate, and prints the median capacity over the seeds, the ratios
of the medians with the range the brackets leave them in, and the share of prompt tokens served
from the prefix cache at capacity.

The balancers are the live proxy's own objects (``proxy.kvhints.balancers``).

    python benchmarks/bench_balancer.py [--workloads chatbot,lats] [--engines 4] [--jobs 2]
        [--seeds 5] [--tolerance 0.02] [--refine 8]
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from proxy.policies.registry import PolicyRegistry
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import STEADY_SERVED, metrics, rate_at, steady_window
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import BASE_RATES
from proxy.sim.simulator.workloads import generate

BALANCERS = ("round-robin", "least-loaded", "autellix", "prefix-aware")
OURS = ("autellix", "prefix-aware")
BASELINES = ("round-robin", "least-loaded")
POLICY = {"chatbot": "plas", "react": "plas", "lats": "atlas", "mixed": "atlas"}
# Per engine, as the single-engine sweep: 2x its programs, since 4 engines drain them faster.
PROGRAMS = {"chatbot": 1600, "react": 1200, "lats": 200, "mixed": 600}
LOADS = (0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.37, 0.45, 0.55, 0.7, 0.85)
"""Times the single-engine knee times the engines: balancers that lose the prefix cache saturate
far below the engines' combined capacity, so the grid starts low."""


def run(job: tuple[str, str, float, int, int, int]) -> dict[str, Any]:
    workload, balancer, rate, programs, engines, seed = job
    specs = generate(workload, rate=rate, programs=programs, seed=seed)
    window = steady_window(len(specs), 0.2, 0.2)
    measured = {specs[i].id for i in window}
    config = SimConfig(engines=engines, balancer=balancer)
    result = Simulator(config, PolicyRegistry().create(POLICY[workload])).run(specs)
    m = metrics(result, measured)
    return {
        "workload": workload,
        "balancer": balancer,
        "seed": seed,
        "rate": rate,
        "latency": m.latency_mean,
        "served": m.served_share,
        "cached": m.cached_fraction,
        "cpu": result.cpu_s,
    }


def reach(rows: list[dict[str, Any]], target: float, steady: bool) -> tuple[float, bool] | None:
    points = sorted(
        (r["rate"], math.inf if steady and r["served"] < STEADY_SERVED else r["latency"])
        for r in rows
    )
    at = rate_at([p[0] for p in points], [p[1] for p in points], target)
    return None if at is None else (at.rate, at.bounded)


Bracket = tuple[dict[str, Any], dict[str, Any]]
"""The run at the highest rate a key's engines kept up with, and the run at the lowest rate
they did not: its steady capacity lies between."""


def steady_bracket(rows: list[dict[str, Any]]) -> Bracket | None:
    """The runs at the last rate the engines kept up with and at the first they did not (the
    capacity lies between); None if they kept up everywhere or nowhere."""
    points = sorted(rows, key=lambda r: r["rate"])
    for r0, r1 in itertools.pairwise(points):
        if r0["served"] >= STEADY_SERVED > r1["served"]:
            return r0, r1
    return None


def ratio(ours: tuple[float, bool] | None, theirs: tuple[float, bool] | None) -> str:
    if ours is None or theirs is None:
        return "-"
    mark = {(True, True): "", (False, True): ">", (True, False): "<"}.get((ours[1], theirs[1]))
    return "?" if mark is None else f"{mark}{ours[0] / theirs[0]:.2f}"


def refine(
    pool: ProcessPoolExecutor,
    rows: list[dict[str, Any]],
    keys: list[tuple[str, str, int]],
    tolerance: float,
    max_steps: int,
    engines: int,
    extra: list[dict[str, Any]],
) -> dict[tuple[str, str, int], Bracket | None]:
    """Bisect each (workload, balancer, seed)'s steady capacity inside the grid's bracket until
    the bracket is narrower than ``tolerance`` of its lower end (at most ``max_steps`` times),
    all keys' runs of a step at once; a balancer steady over the whole grid is first run at
    higher rates until it is not. None where no bracket was found. Its runs are added to
    ``extra``."""
    brackets: dict[tuple[str, str, int], Bracket | None] = {}
    above: dict[tuple[str, str, int], dict[str, Any]] = {}  # steady over the whole grid: top
    for key in keys:
        curve = [r for r in rows if (r["workload"], r["balancer"], r["seed"]) == key]
        brackets[key] = steady_bracket(curve)
        if brackets[key] is None and all(r["served"] >= STEADY_SERVED for r in curve):
            above[key] = max(curve, key=lambda r: r["rate"])
    # Past the grid's top: raise the rate by half until the engines fall behind (a few times).
    for _ in range(4):
        if not above:
            break
        live = list(above)
        jobs = [
            (k[0], k[1], round(above[k]["rate"] * 1.5, 6), PROGRAMS[k[0]], engines, k[2])
            for k in live
        ]
        for k, r in zip(live, pool.map(run, jobs), strict=True):
            extra.append(r)
            if r["served"] >= STEADY_SERVED:
                above[k] = r
            else:
                brackets[k] = (above.pop(k), r)
    for _ in range(max_steps):
        live = [k for k, v in brackets.items() if v is not None and width(v) > tolerance]
        if not live:
            break
        jobs = []
        for k in live:
            lo, hi = brackets[k]  # type: ignore[misc]
            mid = round((lo["rate"] + hi["rate"]) / 2, 6)
            jobs.append((k[0], k[1], mid, PROGRAMS[k[0]], engines, k[2]))
        for k, r in zip(live, pool.map(run, jobs), strict=True):
            extra.append(r)
            lo, hi = brackets[k]  # type: ignore[misc]
            brackets[k] = (r, hi) if r["served"] >= STEADY_SERVED else (lo, r)
    return brackets


def width(bracket: Bracket) -> float:
    """A bracket's width relative to its lower end."""
    lo, hi = bracket
    return float((hi["rate"] - lo["rate"]) / lo["rate"])


def capacity(found: list[Bracket]) -> tuple[float, float, float]:
    """The median over seeds of the brackets' midpoints, lower ends and upper ends: the
    capacity and the range it is known to lie in."""
    return (
        statistics.median((lo["rate"] + hi["rate"]) / 2 for lo, hi in found),
        statistics.median(lo["rate"] for lo, _ in found),
        statistics.median(hi["rate"] for _, hi in found),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="chatbot,lats")
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--latency-factor", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=min(2, multiprocessing.cpu_count()))
    parser.add_argument("--seeds", type=int, default=5, help="seeds per point (median of them)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.02,
        help="bisect each capacity until its bracket is this narrow, relative to its rate",
    )
    parser.add_argument("--refine", type=int, default=8, help="most bisection steps")
    parser.add_argument("--balancers", default=",".join(BALANCERS))
    args = parser.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    balancers = [b.strip() for b in args.balancers.split(",") if b.strip()]
    seeds = list(range(args.seeds))
    jobs = [
        (w, b, round(BASE_RATES["resend"][w] * args.engines * load, 6), PROGRAMS[w],
         args.engines, seed)
        for w in workloads
        for b in balancers
        for load in LOADS
        for seed in seeds
    ]  # fmt: skip
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        rows = list(pool.map(run, jobs))
        keys = [(w, b, seed) for w in workloads for b in balancers for seed in seeds]
        extra: list[dict[str, Any]] = []
        brackets = refine(pool, rows, keys, args.tolerance, args.refine, args.engines, extra)
    wall = time.monotonic() - started
    for w in workloads:
        report(w, [r for r in rows if r["workload"] == w and r["seed"] == 0], balancers, args)
        caps: dict[str, tuple[float, float, float]] = {}
        for b in balancers:
            found = [brackets[(w, b, seed)] for seed in seeds]
            if any(f is None for f in found):
                print(f"steady capacity, {b}: not bracketed by the grid")
                continue
            done = [f for f in found if f is not None]
            caps[b] = capacity(done)
            # The share of prompt tokens served from the prefix cache at capacity: in the run
            # at the highest rate the engines kept up with.
            cached = statistics.median(lo["cached"] for lo, _ in done)
            print(
                f"steady capacity, {b}: {caps[b][0]:.4f}/s (median of {len(seeds)} seed(s); "
                f"median bracket {caps[b][1]:.4f}-{caps[b][2]:.4f}, widest "
                f"{max(width(f) for f in done):.1%}); prefix-cache share at capacity "
                f"{cached:.0%}"
            )
        for ours in (b for b in OURS if b in caps):
            cells = []
            for o in (b for b in BASELINES if b in caps):
                mine, theirs = caps[ours], caps[o]
                cells.append(
                    f"vs {o} {mine[0] / theirs[0]:.2f}x "
                    f"(between {mine[1] / theirs[2]:.2f} and {mine[2] / theirs[1]:.2f})"
                )
            if "autellix" in caps and ours != "autellix":
                mine, theirs = caps[ours], caps["autellix"]
                cells.append(f"vs autellix {mine[0] / theirs[0]:.2f}x")
            if cells:
                print(f"capacity ratio {ours}: " + ", ".join(cells))
    cpu = sum(r["cpu"] for r in rows + extra)
    print(
        f"\n{len(rows)} grid points and {len(extra)} refinement runs, {cpu:.0f} CPU-s, "
        f"{wall:.0f} s wall on {args.jobs} process(es)"
    )


def report(w: str, rows: list[dict[str, Any]], balancers: list[str], args: Any) -> None:
    """The grid of one seed: latency per rate and balancer, and rates at the latency target."""
    print(f"\n{w} ({POLICY[w]}, {args.engines} engines): mean program token latency, s/token")
    print(f"{'rate':>8s} " + " ".join(f"{b:>22s}" for b in balancers))
    for rate in sorted({r["rate"] for r in rows}):
        cells = []
        for b in balancers:
            (r,) = (x for x in rows if x["balancer"] == b and x["rate"] == rate)
            cells.append(f"{r['latency']:.4f} ({r['served']:.2f}, {r['cached']:.0%})")
        print(f"{rate:8.3f} " + " ".join(f"{c:>22s}" for c in cells))
    print("(in brackets: served share, share of prompt tokens from the prefix cache)")
    curves = {b: [r for r in rows if r["balancer"] == b] for b in balancers}
    if "round-robin" not in curves:
        return
    lowest = min(curves["round-robin"], key=lambda r: r["rate"])
    target = args.latency_factor * lowest["latency"]
    for steady in (True, False):
        at = {b: reach(curves[b], target, steady) for b in balancers}
        rates = ", ".join(
            f"{b} {'-' if a is None else ('' if a[1] else '>=') + f'{a[0]:.3f}'}"
            for b, a in at.items()
        )
        ratios = "; ".join(
            f"{ours} vs {o} {ratio(at[ours], at[o])}"
            for ours in OURS if ours in at
            for o in BASELINES if o in at
        )  # fmt: skip
        print(
            f"{'steady' if steady else 'finite run'} at {target:.4f} s/token "
            f"({args.latency_factor:g} x round-robin's at {lowest['rate']:g}/s): {rates}; {ratios}"
        )


if __name__ == "__main__":
    main()
