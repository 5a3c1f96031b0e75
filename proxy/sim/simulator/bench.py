"""``autellix bench``: its flags, and the two runs they select.

The sweep (``sweep.py``) simulates arrival rate x policy x workload. Outputs under ``--out``:
``points.csv`` (every point), ``summary.json`` (per workload and policy: throughput ratios at
equal latency against fcfs and mlfq, the P99 one against fcfs, and against ``vllm-0.6``, fcfs
on a vLLM 0.6-style engine, when that curve is swept), ``meta.json`` (settings,
rates, latency targets, ratios at other targets, simulator speed) and
``latency_<workload>.png``.

Throughput at equal latency (as the paper's Fig. 12): the target is ``--latency-factor``
times fcfs's latency at the lowest swept rate (light load), for the mean and for P99 alike
(against ``vllm-0.6``: that factor times its own light-load mean); each policy's curve is
interpolated where it first crosses the target (``results.rate_at``) and the rates are
divided. The sweep runs in two passes: the coarse grid,
then ``--refine`` more rates inside each curve's crossing (``sweep.refine``). Every point
measures its steady-state window only (``--warmup``, ``--cooldown``). A ratio whose policy
never crosses within the grid is a lower bound, one whose baseline never does an upper bound
(``<ratio>_is`` in summary.json; ">" and "<" in the table).

With ``--trace FILE`` (``replay.py``) a recorded trace is replayed instead, at its recorded
arrival times, once per policy: ``points.csv`` (one row per policy), ``summary.json`` (each
policy's program token latency: mean, P50, P95, P99) and ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from proxy.sim.engine.cost import PRESETS
from proxy.sim.simulator.balancer import make_balancer
from proxy.sim.simulator.baselines import engine_config
from proxy.sim.simulator.explain import (
    best_cap,
    engine_state,
    format_state,
    p99_where_steady,
)
from proxy.sim.simulator.progress import Progress
from proxy.sim.simulator.refine import refine
from proxy.sim.simulator.replay import format_latency_table, load_programs, replay_row, summary
from proxy.sim.simulator.results import STEADY_SERVED
from proxy.sim.simulator.seeds import by_seed, median_rows, spread
from proxy.sim.simulator.simconfig import config_from_args
from proxy.sim.simulator.summary import format_table
from proxy.sim.simulator.sweep import (
    COOLDOWN,
    EXTRA_FACTORS,
    POLICIES,
    QUICK_POLICIES,
    SEEDS,
    WARMUP,
    make_policy,
    plan,
    policy_configs,
    refine_count,
    seed_count,
    split_names,
    sweep,
    write_csv,
)
from proxy.sim.simulator.workloads import WORKLOAD_NAMES


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``autellix bench`` flags."""
    parser.add_argument("--out", default="bench-out", help="output folder (default bench-out)")
    parser.add_argument("--quick", action="store_true", help="a small sweep (under 2 minutes)")
    parser.add_argument(
        "--workloads", help=f"comma list of {', '.join(WORKLOAD_NAMES)} (default: all)"
    )
    parser.add_argument(
        "--policies",
        help="comma list of registry names or package.module:Class paths "
        f"(default {','.join(POLICIES)}; --quick: {','.join(QUICK_POLICIES)})",
    )
    parser.add_argument(
        "--policy-config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="settings of one policy, e.g. plas='{\"beta\": null}' (repeatable)",
    )
    parser.add_argument(
        "--rates", help="comma list of arrival rates (programs/s) for every workload"
    )
    parser.add_argument("--programs", type=int, help="programs per point (default per workload)")
    parser.add_argument("--seed", type=int, default=0, help="first workload seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=int,
        help=f"seeds per point, from --seed on (default {SEEDS}; --quick: 1); ratios are read "
        "per seed and reported as median and range",
    )
    parser.add_argument(
        "--sigma",
        help="comma list of scales of chatbot's lognormal length sigmas, each its own case "
        "(e.g. 0.5,1,1.5; default 1)",
    )
    parser.add_argument(
        "--preset", default="llama31-8b-a100", choices=sorted(PRESETS), help="engine cost model"
    )
    parser.add_argument("--engines", type=int, default=1, help="engines behind the balancer")
    parser.add_argument(
        "--balancer",
        default="autellix",
        help="round-robin, least-loaded, autellix, prefix-aware or a path",
    )
    parser.add_argument(
        "--preemption",
        choices=("swap", "recompute"),
        default="swap",
        help="how a call preempted for priority gives up its KV (default swap)",
    )
    parser.add_argument("--no-prefix-cache", action="store_true", help="turn the prefix cache off")
    parser.add_argument(
        "--max-num-seqs",
        type=int,
        default=256,
        help="sequences an engine runs at once (vLLM's max_num_seqs, default 256)",
    )
    parser.add_argument(
        "--cap",
        choices=("auto", "off", "fixed", "adaptive"),
        default="auto",
        help="admission cap per engine (docs/gate.md): auto (default) is adaptive where it "
        "helps (srpt; plas with rank retention), off elsewhere",
    )
    parser.add_argument("--cap-k", type=int, help="the fixed cap, or where the adaptive one starts")
    parser.add_argument(
        "--no-chunked-prefill",
        action="store_true",
        help="vLLM 0.6-style steps: whole prompts prefilled alone, then decodes",
    )
    parser.add_argument(
        "--kv-evict",
        choices=("auto", "lru", "rank"),
        default="auto",
        help="prefix-cache eviction: auto (default: each curve's engine as deployed, rank and a "
        "learned TTL for the orders the autellix vLLM plug-in runs, LRU for stock engines; "
        "docs/simulator.md), lru (vLLM's) or rank (the policy's) for every curve",
    )
    parser.add_argument(
        "--kv-ttl",
        help="hold finished contexts: none (default), learned or seconds, for every curve "
        "whose retention --kv-evict auto does not set",
    )
    parser.add_argument(
        "--context",
        help="comma list: resend (multi-turn calls resend their conversation) and/or fresh "
        "(every prompt is only its new tokens), each its own case (default resend,fresh; "
        "--quick: resend)",
    )
    parser.add_argument(
        "--tool-scale", type=float, default=1.0, help="multiply the tool / think times"
    )
    parser.add_argument(
        "--rerank-interval", type=float, default=1.0, help="virtual seconds between re-rankings"
    )
    parser.add_argument(
        "--latency-factor",
        type=float,
        default=1.5,
        help="headline latency target = this x fcfs's latency at the lowest rate (vllm-0.6's "
        "own for the ratio against it; default 1.5; 2 and 3 are reported too)",
    )
    parser.add_argument(
        "--refine",
        type=int,
        help="rates added inside each curve's crossing of the target in a second pass "
        "(default 1; 0 with --rates)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP,
        help=f"share of each point's first programs not measured (default {WARMUP:g})",
    )
    parser.add_argument(
        "--cooldown",
        type=float,
        default=COOLDOWN,
        help=f"share of each point's last programs not measured (default {COOLDOWN:g})",
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="worker processes (default: CPU count, at most 2)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--trace",
        metavar="FILE",
        help="instead of the sweep, replay this JSON-lines call trace (as the proxy writes with "
        "trace_file) at its recorded arrival times, one run per policy",
    )


def run_bench(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the sweep ``args`` describe, or with ``--trace`` the replay; 0 on success, 2 on bad
    arguments or a bad trace."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    if args.trace is not None:
        return _run_trace(args, out_stream, err_stream, clock)
    started = clock()
    if not args.no_plots:
        from proxy.sim.simulator.plot import plotting_unavailable

        if (why := plotting_unavailable()) is not None:
            err_stream.write(f"autellix bench: {why}\n")
            return 2
    try:
        points = plan(args)
        make_policy_checks = {p.policy: p.policy_config for p in points}
        for name, config in make_policy_checks.items():
            make_policy(name, config)  # fail before the sweep, with the registry's message
    except Exception as exc:  # the registry and the parsers raise a few kinds; all are usage
        err_stream.write(f"autellix bench: {exc}\n")
        return 2
    jobs = args.jobs or min(2, multiprocessing.cpu_count())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = sweep(points, jobs=jobs, progress=Progress(len(points), err_stream))
    refined = refine(points, rows, args.latency_factor, refine_count(args))
    if refined:
        progress = Progress(len(refined), err_stream, label="refinement points")
        rows = rows + sweep(refined, jobs=jobs, progress=progress)
    wall = clock() - started
    factors = [args.latency_factor, *(f for f in EXTRA_FACTORS if f != args.latency_factor)]
    steady: dict[str, Any] = {}
    finite: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    for factor in factors:
        steady[f"{factor:g}"], notes[f"{factor:g}"] = spread(rows, factor)
        finite[f"{factor:g}"], _ = spread(rows, factor, steady=False)
    headline = f"{args.latency_factor:g}"
    state = engine_state(rows, notes[headline])
    cpu = sum(float(r["cpu_s"]) for r in rows)
    sim_tokens = sum(int(r["sim_tokens"]) for r in rows)
    generated = sum(int(r["generated_tokens"]) for r in rows)
    speed = {
        "cpu_s": cpu,
        "sim_tokens": sim_tokens,
        "generated_tokens": generated,
        "sim_tokens_per_cpu_s": sim_tokens / cpu if cpu else None,
        "generated_tokens_per_cpu_s": generated / cpu if cpu else None,
        "wall_s": wall,
        "jobs": jobs,
    }
    seeds = sorted(by_seed(rows))
    write_csv(rows, out / "points.csv")
    report = {
        "headline_factor": args.latency_factor,
        "factors": factors,
        "seeds": seeds,
        "reading": "each ratio is read on each seed's curves; median, min and max over seeds",
        "steady": steady,
        "finite_run": finite,
        "engine_state_at_fcfs_target": state,
        "p99_vs_fcfs_worst_where_both_steady": p99_where_steady(rows, STEADY_SERVED),
        "srpt_cap_sweep": best_cap(notes[headline]),
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    meta = {
        "argv": {k: v for k, v in vars(args).items() if _jsonable(v)},
        "latency_factor": args.latency_factor,
        "seeds_per_point": seed_count(args),
        "points": {"grid": len(points), "refinement": len(refined)},
        "steady_window": {"warmup": args.warmup, "cooldown": args.cooldown},
        "targets_and_reach_by_seed": notes,
        "steady_served_share": STEADY_SERVED,
        "speed": speed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if not args.no_plots:
        from proxy.sim.simulator.plot import plot_sweep

        first: dict[str, Any] = next(iter(notes[headline].values()), {})
        plot_sweep(
            median_rows(rows),
            out,
            targets={w: n["targets"] for w, n in first.items()},
            title=f"{args.preset}, {args.engines} engine(s), median of {len(seeds)} seed(s)",
        )
    for factor in factors:
        label = "headline" if f"{factor:g}" == headline else "also reported"
        out_stream.write(
            f"Steady state, target {factor:g} x fcfs's zero-load latency ({label}): throughput at "
            f"equal latency, median of {len(seeds)} seed(s); a point whose engines served under "
            f"{STEADY_SERVED:g} of the offered work counts as over the target\n"
        )
        out_stream.write(format_table(steady[f"{factor:g}"]) + "\n")
    out_stream.write(
        f"Finite-run reading, target {headline} x (every point's latency as measured, "
        "overloaded or not; not a steady state)\n"
    )
    out_stream.write(format_table(finite[headline]) + "\n")
    out_stream.write("Engine state at fcfs's rate at the headline target (median of seeds)\n")
    out_stream.write(format_state(state) + "\n")
    out_stream.write(
        f"simulated {sim_tokens:,} tokens ({generated:,} generated) in {cpu:.1f} CPU-s: "
        f"{speed['sim_tokens_per_cpu_s'] or 0:,.0f} tokens per CPU-second "
        f"({speed['generated_tokens_per_cpu_s'] or 0:,.0f} generated); "
        f"{len(rows)} points in {wall:.0f} s wall on {jobs} process(es); outputs in {out}\n"
    )
    return 0


def _jsonable(value: object) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


def _run_trace(
    args: argparse.Namespace, out_stream: TextIO, err_stream: TextIO, clock: Callable[[], float]
) -> int:
    started = clock()
    try:
        if args.rates or args.workloads or args.programs is not None:
            raise ValueError(
                "--trace replays the recorded arrivals: it takes no --rates, --workloads "
                "or --programs"
            )
        if args.engines < 1 or args.max_num_seqs < 1 or args.rerank_interval <= 0:
            raise ValueError(
                "--engines and --max-num-seqs must be at least 1 and --rerank-interval positive"
            )
        policies = split_names(args.policies, QUICK_POLICIES if args.quick else POLICIES)
        configs = policy_configs(args.policy_config)
        for name in policies:
            make_policy(name, configs.get(name, {}))  # fail before the runs
        config = config_from_args(args)
        make_balancer(config.balancer)
        programs = load_programs(args.trace)
    except Exception as exc:  # usage errors and a bad trace alike: a message, no traceback
        err_stream.write(f"autellix bench: {exc}\n")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(len(policies), err_stream, label="policies")
    rows = []
    for name in policies:
        engines = engine_config(name, config, auto_retention=args.kv_evict == "auto")
        rows.append(replay_row(programs, name, configs.get(name, {}), engines))
        progress.advance(name)
    write_csv(rows, out / "points.csv")
    result = summary(rows, args.trace)
    (out / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    meta = {
        "argv": {k: v for k, v in vars(args).items() if _jsonable(v)},
        "wall_s": clock() - started,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    out_stream.write(
        f"Program token latency (s/token), replaying {args.trace}: {result['programs']} "
        f"programs, {result['calls']} calls at their recorded arrivals "
        f"({result['arrival_rate']:.3g} programs/s)\n"
    )
    out_stream.write(format_latency_table(rows) + "\n")
    out_stream.write(f"outputs in {out}\n")
    return 0
