"""Program-aware KV retention in the simulator: LRU vs rank eviction vs rank + a learned TTL.

For each workload, rate, policy and retention setting, runs the same programs (common random
numbers per seed) and prints the median over seeds of the token latency (mean and P99 of the
measured programs, s/token), the prefix-hit share (prompt tokens served from cache) and the
engine state that explains them: mean KV in use, mean share of the cache held by retained
contexts, hits on held contexts, evictions, holds that expired or were shed. Ratios are
against LRU under the same policy in the same run.

    nice -n 10 python benchmarks/bench_retention.py --workloads chatbot,react --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from typing import Any

from proxy.core.concurrency import CapConfig
from proxy.core.retention import RetentionConfig
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import metrics, steady_window
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import PROGRAMS, make_policy
from proxy.sim.simulator.workloads import generate

VARIANTS = {
    "lru": RetentionConfig(),
    "rank": RetentionConfig(evict="rank"),
    "lru+ttl": RetentionConfig(ttl="learned"),
    "rank+ttl": RetentionConfig(evict="rank", ttl="learned"),
}
RATES = {"chatbot": (0.9, 1.1, 1.3), "react": (0.5, 0.65, 0.8)}


def run(
    workload: str, rate: float, policy: str, variant: str, seed: int, args: Any
) -> dict[str, float]:
    n = args.programs or PROGRAMS[workload]
    programs = generate(workload, rate=rate, programs=n, seed=seed, fresh=args.fresh)
    window = steady_window(len(programs), 0.2, 0.2)
    measured = {programs[i].id for i in window}
    config = SimConfig(retention=VARIANTS[variant])
    if args.max_num_seqs:
        shape = dataclasses.replace(config.shape, max_num_seqs=args.max_num_seqs)
        config = dataclasses.replace(config, shape=shape)
    if args.cap:
        config = dataclasses.replace(config, cap=CapConfig(mode="fixed", k=args.cap))
    sim = Simulator(config, make_policy(policy))
    m = metrics(sim.run(programs), measured)
    stats = [e.cache.stats for e in sim.engines if e.cache is not None]
    s = stats[0]
    return {
        "lat": m.latency_mean,
        "p99": m.latency_p99,
        "hit": m.cached_fraction,
        "kv": s.mean(s.kv_area),
        "pinned": s.mean(s.pinned_area),
        "cached": s.mean(s.cached_area),
        "held_hits": s.held_hits,
        "hits": s.hits,
        "misses": s.misses,
        "evicted": s.evicted,
        "expired": s.expired,
        "shed": s.shed,
        "served": m.served_share,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="chatbot,react")
    parser.add_argument("--policies", default="fcfs,plas")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rates", help="comma list for every workload (default per workload)")
    parser.add_argument("--programs", type=int)
    parser.add_argument("--fresh", action="store_true", help="fresh contexts (default resent)")
    parser.add_argument("--cap", type=int, help="fixed admission cap k (SimConfig.cap)")
    parser.add_argument(
        "--max-num-seqs", type=int, help="sequences an engine runs (a cap's stand-in: 32)"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        "workload rate policy variant | lat(s/tok) ratio p99 | hit | kv pinned cached | "
        "held_hits hits misses evicted expired shed | served  (medians over seeds "
        f"{args.seeds}{', cap ' + str(args.cap) if args.cap else ''}"
        f"{', max_num_seqs ' + str(args.max_num_seqs) if args.max_num_seqs else ''})"
    )
    for workload in args.workloads.split(","):
        rates = [float(r) for r in args.rates.split(",")] if args.rates else RATES[workload]
        for rate in rates:
            for policy in args.policies.split(","):
                base = None
                for variant in args.variants.split(","):
                    rows = [run(workload, rate, policy, variant, s, args) for s in seeds]
                    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                    if base is None:
                        base = med["lat"]
                    lats = " ".join(f"{r['lat']:.4f}" for r in rows)
                    print(
                        f"{workload} {rate:g} {policy} {variant} | {med['lat']:.4f} "
                        f"{med['lat'] / base:.3f} {med['p99']:.4f} | {med['hit']:.3f} | "
                        f"{med['kv']:.3f} {med['pinned']:.3f} {med['cached']:.3f} | "
                        f"{med['held_hits']:.0f} {med['hits']:.0f} {med['misses']:.0f} "
                        f"{med['evicted']:.0f} {med['expired']:.0f} {med['shed']:.0f} | "
                        f"{med['served']:.3f}  [seeds: {lats}]",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
