"""Does priority-ordered admission (the admission cap) help, and where? The simulator's default
engine (Llama-3.1-8B on an A100), one curve per policy and cap, several seeds.

    nice -n 10 .venv/bin/python benchmarks/bench_admission_cap.py \
        [--workloads chatbot,react] [--curves fcfs,fcfs+adaptive,plas,plas+adaptive] \
        [--loads 0.3,0.5,0.7,0.85,1.0] [--seeds 0,1,2,3,4] [--programs 800] [--fresh] [--jobs 1]

A curve is ``policy[+cap[+option...]]``: cap ``adaptive``, ``fixed:K`` or a controller
setting list ``adaptive:alpha=0.2:beta=0.5``; options ``nopreempt`` (admission order only) and
``quantum=S`` (the preemption rule's minimum quantum). Prints, per workload, load and curve,
the median over the seeds of the mean token latency (s/token, half the seeds' spread after
±) and its ratio against the same policy uncapped at that load (or fcfs, if that curve is not
run), P99, the served share (under
0.9: the engines fell behind, not steady), and the engine state that explains the figure:
mean calls running and waiting over busy time, the mean cap, priority preemptions and the
prefix-cache hit share. Then, per curve, the highest arrival rate whose median mean latency
stays within 1.5x, 2x and 3x fcfs's at the lowest load (steady points only), interpolated as
the bench's ``rate_at`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import statistics
import sys
from typing import Any

from proxy.core.concurrency import CapConfig
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import STEADY_SERVED, metrics, rate_at, steady_window
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import BASE_RATES, COOLDOWN, WARMUP, make_policy
from proxy.sim.simulator.workloads import generate

Task = tuple[str, str, float, float, int, int, bool]  # workload, curve, load, rate, seed, n, fresh


def parse_curve(text: str) -> tuple[str, SimConfig]:
    policy, *parts = text.split("+")
    config = SimConfig()
    for part in parts:
        if part.startswith("fixed:"):
            config = dataclasses.replace(config, cap=CapConfig(mode="fixed", k=int(part[6:])))
        elif part.startswith("adaptive"):
            fields: dict[str, Any] = {}
            for item in part.split(":")[1:]:
                key, value = item.split("=")
                fields[key] = float(value) if "." in value else int(value)
            config = dataclasses.replace(config, cap=CapConfig(mode="adaptive", **fields))
        elif part == "nopreempt":
            rule = dataclasses.replace(config.preempt, preempt=False)
            config = dataclasses.replace(config, preempt=rule)
        elif part.startswith("quantum="):
            rule = dataclasses.replace(config.preempt, min_quantum_s=float(part[8:]))
            config = dataclasses.replace(config, preempt=rule)
        else:
            raise SystemExit(f"unknown curve part {part!r} in {text!r}")
    if config.cap.mode == "off":  # measure the engine state too: a cap that never binds
        config = dataclasses.replace(config, cap=CapConfig(mode="fixed", k=10**6))
    return policy, config


def run(task: Task) -> dict[str, float]:
    workload, curve, _, rate, seed, n, fresh = task
    policy, config = parse_curve(curve)
    programs = generate(workload, rate=rate, programs=n, seed=seed, fresh=fresh)
    window = steady_window(len(programs), WARMUP, COOLDOWN)
    measured = {programs[i].id for i in window}
    sim = Simulator(config, make_policy(policy))
    m = metrics(sim.run(programs), measured)
    cap = sim.engines[0].cap
    assert cap is not None
    return {
        "mean": m.latency_mean,
        "p99": m.latency_p99,
        "served": m.served_share,
        "pre": float(m.priority_preemptions),
        "hit": m.cached_fraction,
        "run": cap.mean_running,
        "wait": cap.mean_waiting,
        "k": min(cap.mean_cap, 256.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workloads", default="chatbot,react")
    parser.add_argument("--curves", default="fcfs,fcfs+adaptive,plas,plas+adaptive")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.85,1.0")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--programs", type=int, default=800)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    workloads, curves = args.workloads.split(","), args.curves.split(",")
    loads = [float(x) for x in args.loads.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    base = BASE_RATES["fresh" if args.fresh else "resend"]
    tasks: list[Task] = [
        (w, c, load, base[w] * load, s, args.programs, args.fresh)
        for w in workloads
        for load in loads
        for c in curves
        for s in seeds
    ]
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            results = pool.map(run, tasks, chunksize=1)
    else:
        results = [run(t) for t in tasks]
    rows: dict[tuple[str, str, float], list[dict[str, float]]] = {}
    for task, result in zip(tasks, results, strict=True):
        rows.setdefault((task[0], task[1], task[2]), []).append(result)
    print(f"seeds {seeds}, {args.programs} programs, {'fresh' if args.fresh else 'resent'}")
    for w in workloads:
        curve_points: dict[str, list[tuple[float, float]]] = {}
        for load in loads:
            for c in curves:
                group = rows[(w, c, load)]

                def med(key: str, group: list[dict[str, float]] = group) -> float:
                    return statistics.median(r[key] for r in group)

                mean = med("mean")
                plain = c.split("+")[0]
                base_rows = rows.get((w, plain, load)) or rows.get((w, "fcfs", load)) or group
                ref = statistics.median(r["mean"] for r in base_rows)
                half = (max(r["mean"] for r in group) - min(r["mean"] for r in group)) / 2
                served = med("served")
                curve_points.setdefault(c, []).append(
                    (base[w] * load, mean if served >= STEADY_SERVED else math.inf)
                )
                print(
                    f"{w:8} load={load:4.2f} rate={base[w] * load:6.3f} {c:28} "
                    f"mean={mean:.4f}±{half:.4f} ratio={ref / mean:5.2f} p99={med('p99'):.4f} "
                    f"served={served:.2f} run={med('run'):6.1f} wait={med('wait'):6.1f} "
                    f"k={med('k'):6.1f} pre={med('pre'):6.0f} hit={med('hit'):.2f}",
                    flush=True,
                )
        zero = curve_points.get("fcfs", next(iter(curve_points.values())))[0][1]
        for c, points in curve_points.items():
            rates = [p[0] for p in points]
            lat = [p[1] for p in points]
            found = []
            for factor in (1.5, 2.0, 3.0):
                at = rate_at(rates, lat, factor * zero)
                found.append("none" if at is None else f"{at.rate:.3f}{'' if at.bounded else '+'}")
            print(f"{w:8} {c:28} rate at 1.5x/2x/3x zero-load latency: {' / '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
