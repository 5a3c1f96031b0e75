"""Several engines: the Autellix balancer against round-robin and least-loaded, at equal latency.

The paper reports up to 1.4x throughput over round-robin and least-used balancing with 4
engines. This runs the simulator (``proxy/sim``) with ``--engines`` A100 engines behind each
balancer, the same policy on all (PLAS for chatbot and ReAct, ATLAS for LATS and mixed: the
paper's pairing) and the same programs at each rate (one seed), and prints each balancer's mean
program token latency against the arrival rate, then the rate each sustains at a latency target
(``--latency-factor`` x round-robin's latency at the lowest rate, read as ``autellix bench``
reads it: steady, a point whose engines served under 90% of the offered work counting as over
the target; and finite run, every point as measured), the ratios of the Autellix balancer's
rate to the others', and the range the capacity ratio lies in given the grid's spacing.

    python benchmarks/bench_balancer.py [--workloads chatbot,mixed] [--engines 4] [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from proxy.policies.registry import PolicyRegistry
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import STEADY_SERVED, metrics, rate_at, steady_window
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import BASE_RATES
from proxy.sim.simulator.workloads import generate

BALANCERS = ("round-robin", "least-loaded", "autellix")
POLICY = {"chatbot": "plas", "react": "plas", "lats": "atlas", "mixed": "atlas"}
# Per engine, as the single-engine sweep: 2x its programs, since 4 engines drain them faster.
PROGRAMS = {"chatbot": 1600, "react": 1200, "lats": 200, "mixed": 600}
LOADS = (0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.37, 0.45, 0.55, 0.7, 0.85)
"""Times the single-engine knee times the engines: balancers that lose the prefix cache saturate
far below the engines' combined capacity, so the grid starts low."""


def run(job: tuple[str, str, float, int, int]) -> dict[str, Any]:
    workload, balancer, rate, programs, engines = job
    specs = generate(workload, rate=rate, programs=programs, seed=0)
    window = steady_window(len(specs), 0.2, 0.2)
    measured = {specs[i].id for i in window}
    config = SimConfig(engines=engines, balancer=balancer)
    result = Simulator(config, PolicyRegistry().create(POLICY[workload])).run(specs)
    m = metrics(result, measured)
    return {
        "workload": workload,
        "balancer": balancer,
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


def steady_bracket(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The last rate the engines kept up with and the first they did not (the capacity lies
    between); None if they kept up everywhere or nowhere."""
    points = sorted((r["rate"], r["served"] >= STEADY_SERVED) for r in rows)
    for (r0, ok0), (r1, ok1) in itertools.pairwise(points):
        if ok0 and not ok1:
            return r0, r1
    return None


def ratio(ours: tuple[float, bool] | None, theirs: tuple[float, bool] | None) -> str:
    if ours is None or theirs is None:
        return "-"
    mark = {(True, True): "", (False, True): ">", (True, False): "<"}.get((ours[1], theirs[1]))
    return "?" if mark is None else f"{mark}{ours[0] / theirs[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="chatbot,mixed")
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--latency-factor", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=min(2, multiprocessing.cpu_count()))
    args = parser.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    jobs = [
        (w, b, round(BASE_RATES["resend"][w] * args.engines * load, 6), PROGRAMS[w], args.engines)
        for w in workloads
        for b in BALANCERS
        for load in LOADS
    ]
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
        rows = list(pool.map(run, jobs))
    wall = time.monotonic() - started
    for w in workloads:
        print(f"\n{w} ({POLICY[w]}, {args.engines} engines): mean program token latency, s/token")
        print(f"{'rate':>8s} " + " ".join(f"{b:>22s}" for b in BALANCERS))
        for rate in sorted({r["rate"] for r in rows if r["workload"] == w}):
            cells = []
            for b in BALANCERS:
                (r,) = (x for x in rows if x["workload"] == w and x["balancer"] == b
                        and x["rate"] == rate)  # fmt: skip
                cells.append(f"{r['latency']:.4f} ({r['served']:.2f}, {r['cached']:.0%})")
            print(f"{rate:8.3f} " + " ".join(f"{c:>22s}" for c in cells))
        print("(in brackets: served share, share of prompt tokens from the prefix cache)")
        curves = {b: [r for r in rows if r["workload"] == w and r["balancer"] == b]
                  for b in BALANCERS}  # fmt: skip
        lowest = min(curves["round-robin"], key=lambda r: r["rate"])
        target = args.latency_factor * lowest["latency"]
        for steady in (True, False):
            at = {b: reach(curves[b], target, steady) for b in BALANCERS}
            rates = ", ".join(
                f"{b} {'-' if a is None else ('' if a[1] else '>=') + f'{a[0]:.3f}'}"
                for b, a in at.items()
            )
            print(
                f"{'steady' if steady else 'finite run'} at {target:.4f} s/token "
                f"({args.latency_factor:g} x round-robin's at {lowest['rate']:g}/s): {rates}; "
                f"autellix vs round-robin {ratio(at['autellix'], at['round-robin'])}, "
                f"vs least-loaded {ratio(at['autellix'], at['least-loaded'])}"
            )
        # The grid's resolution: capacity lies between the last steady rate and the next.
        brackets = {b: steady_bracket(curves[b]) for b in BALANCERS}
        ours = brackets["autellix"]
        for other in ("round-robin", "least-loaded"):
            theirs = brackets[other]
            if ours is not None and theirs is not None:
                print(
                    f"capacity: autellix {ours[0]:.3f}-{ours[1]:.3f}, {other} "
                    f"{theirs[0]:.3f}-{theirs[1]:.3f}/s: autellix vs {other} between "
                    f"{ours[0] / theirs[1]:.2f} and {ours[1] / theirs[0]:.2f}"
                )
    cpu = sum(r["cpu"] for r in rows)
    print(f"\n{len(rows)} points, {cpu:.0f} CPU-s, {wall:.0f} s wall on {args.jobs} process(es)")


if __name__ == "__main__":
    main()
