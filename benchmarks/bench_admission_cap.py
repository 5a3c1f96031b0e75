"""Does priority-ordered admission (the admission cap) help, and where? The simulator's default
engine (Llama-3.1-8B on an A100), one curve per (policy, cap), several seeds.

    nice -n 10 .venv/bin/python benchmarks/bench_admission_cap.py \
        [--workloads chatbot,react] [--policies fcfs,plas,srpt] [--caps off,adaptive,fixed:32] \
        [--loads 0.4,0.6,0.8,1.0] [--seeds 0,1,2] [--programs 400] [--fresh]

Prints, per workload, load and cap, each policy's median over the seeds of the mean token
latency (s/token) with its ratio against the same policy uncapped in the same run, P99,
the served share (under 0.9: not steady), and the engine state that explains the figure:
mean calls running and waiting over busy time, the mean cap and priority preemptions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

from proxy.core.concurrency import CapConfig
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import metrics, steady_window
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import BASE_RATES, COOLDOWN, WARMUP, make_policy
from proxy.sim.simulator.workloads import generate


def parse_cap(text: str) -> CapConfig:
    if text == "off":
        return CapConfig()
    if text.startswith("fixed:"):
        return CapConfig(mode="fixed", k=int(text.split(":", 1)[1]))
    if text.startswith("adaptive"):
        fields: dict[str, Any] = {}
        for item in text.split(":")[1:]:
            key, value = item.split("=")
            fields[key] = float(value) if "." in value else int(value)
        return CapConfig(mode="adaptive", **fields)
    raise SystemExit(f"unknown cap {text!r}")


def point(workload: str, policy: str, cap: CapConfig, rate: float, seed: int, n: int,
          fresh: bool) -> dict[str, float]:  # fmt: skip
    programs = generate(workload, rate=rate, programs=n, seed=seed, fresh=fresh)
    window = steady_window(len(programs), WARMUP, COOLDOWN)
    measured = {programs[i].id for i in window}
    sim = Simulator(SimConfig(cap=cap), make_policy(policy))
    result = sim.run(programs)
    m = metrics(result, measured)
    slot = sim.engines[0]
    out = {
        "mean": m.latency_mean,
        "p99": m.latency_p99,
        "served": m.served_share,
        "pre": float(m.priority_preemptions),
        "hit": m.cached_fraction,
        "cpu": m.cpu_s,
    }
    if slot.cap is not None:
        out.update(run=slot.cap.mean_running, wait=slot.cap.mean_waiting, k=slot.cap.mean_cap)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="chatbot,react")
    parser.add_argument("--policies", default="fcfs,plas,srpt")
    parser.add_argument("--caps", default="off,adaptive")
    parser.add_argument("--loads", default="0.4,0.6,0.8,1.0")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--programs", type=int, default=400)
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    caps = args.caps.split(",")
    # The off curve carries the running/waiting figures too: measure it with a cap that never
    # binds (fixed at the engine's own limit) so every row has them.
    for workload in args.workloads.split(","):
        base = BASE_RATES["fresh" if args.fresh else "resend"][workload]
        for load in (float(x) for x in args.loads.split(",")):
            rate = base * load
            for policy in args.policies.split(","):
                ref: float | None = None
                for cap_text in caps:
                    cap = parse_cap(cap_text)
                    if cap.mode == "off":
                        cap = CapConfig(mode="fixed", k=256)
                    rows = [
                        point(workload, policy, cap, rate, int(s), args.programs, args.fresh)
                        for s in args.seeds.split(",")
                    ]

                    def med(key: str, rows: list[dict[str, float]] = rows) -> float:
                        return statistics.median(r.get(key, float("nan")) for r in rows)

                    mean = med("mean")
                    if ref is None:
                        ref = mean
                    spread = max(r["mean"] for r in rows) - min(r["mean"] for r in rows)
                    print(
                        f"{workload:8} load={load:4.2f} rate={rate:6.3f} {policy:6} "
                        f"{cap_text:18} mean={mean:.4f}±{spread / 2:.4f} "
                        f"ratio={ref / mean:5.2f} p99={med('p99'):.4f} served={med('served'):.2f} "
                        f"run={med('run'):6.1f} wait={med('wait'):6.1f} k={med('k'):6.1f} "
                        f"pre={med('pre'):6.0f} hit={med('hit'):.2f} cpu={med('cpu'):.0f}s",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
