"""``autellix bench``: sweep arrival rate x policy x workload in the simulator, and compare.

Each point simulates the same programs (same seed: common random numbers) at one arrival rate
under one policy, built by name through the policy registry, so a plug-in policy runs here
unchanged. Outputs under ``--out``: ``points.csv`` (every point), ``summary.json`` (per
workload and policy: throughput ratios at equal latency against fcfs and mlfq, and the P99
one against fcfs), ``meta.json`` (settings, rates, latency targets, ratios at other targets,
simulator speed) and ``latency_<workload>.png``.

Rates. The default grid of a workload is its ``BASE_RATES`` entry (near where fcfs starts to
queue on one A100 engine) times ``LOADS``, scaled by the number of engines and the preset's
speed relative to the A100; ``--rates`` replaces it.

Throughput at equal latency (as the paper's Fig. 12): the target is ``--latency-factor``
times fcfs's latency at the lowest swept rate (light load), for the mean and for P99 alike;
each policy's curve is interpolated where it first crosses the target
(``results.rate_at``) and the rates are divided. A policy that never crosses within the grid
gives a lower bound (flagged in meta.json).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from proxy.policies.base import Policy
from proxy.policies.registry import PolicyRegistry
from proxy.sim.cost import PRESETS
from proxy.sim.des import EngineShape, SimConfig, Simulator
from proxy.sim.policy_queue import PreemptConfig
from proxy.sim.results import Metrics, format_table, metrics, ratios
from proxy.sim.workloads import WORKLOAD_NAMES, WorkloadSpec, generate, paper_workloads

# Programs per second near which fcfs starts to queue on one A100 engine, measured with
# resent and with fresh contexts (docs/simulator.md); the default grid is LOADS times these.
BASE_RATES = {
    "resend": {"chatbot": 1.3, "react": 0.5, "lats": 0.07, "mixed": 0.18},
    "fresh": {"chatbot": 2.8, "react": 1.0, "lats": 0.12, "mixed": 0.3},
}
LOADS = (0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0)
QUICK_LOADS = (0.6, 1.0, 1.5, 3.0)
PROGRAMS = {"chatbot": 800, "react": 600, "lats": 150, "mixed": 300}
FRESH_PROGRAMS = {"chatbot": 1500, "react": 800, "lats": 150, "mixed": 300}
# Fewer programs make the overloaded points short transients: quick ratios are indicative only.
QUICK_PROGRAMS = {"chatbot": 800, "react": 600, "lats": 80, "mixed": 150}
POLICIES = ("fcfs", "mlfq", "plas", "atlas", "srpt")
QUICK_POLICIES = ("fcfs", "mlfq", "plas", "atlas")
BASELINES = ("fcfs", "mlfq")
EXTRA_FACTORS = (2.0, 3.0, 5.0, 8.0, 12.0)

CSV_COLUMNS = (
    "workload",
    "policy",
    "rate",
    "load",
    "seed",
    *(f.name for f in dataclasses.fields(Metrics)),
)


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
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument(
        "--preset", default="llama31-8b-a100", choices=sorted(PRESETS), help="engine cost model"
    )
    parser.add_argument("--engines", type=int, default=1, help="engines behind the balancer")
    parser.add_argument(
        "--balancer", default="autellix", help="round-robin, least-loaded, autellix or a path"
    )
    parser.add_argument(
        "--preemption",
        choices=("swap", "recompute"),
        default="swap",
        help="how a call preempted for priority gives up its KV (default swap)",
    )
    parser.add_argument("--no-prefix-cache", action="store_true", help="turn the prefix cache off")
    parser.add_argument(
        "--context",
        choices=("resend", "fresh"),
        default="resend",
        help="resend: multi-turn calls resend their conversation (default); fresh: every "
        "prompt is only its new tokens",
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
        default=5.0,
        help="latency target = this x fcfs's latency at the lowest rate (default 5)",
    )
    parser.add_argument(
        "--jobs", type=int, default=0, help="worker processes (default: CPU count, at most 2)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    workload: str
    policy: str
    policy_config: Mapping[str, Any]
    rate: float
    load: float
    programs: int
    seed: int
    config: SimConfig
    tool_scale: float
    fresh: bool
    specs: Mapping[str, WorkloadSpec]


def make_policy(name: str, config: Mapping[str, Any] | None = None) -> Policy:
    return PolicyRegistry().create(name, dict(config or {}))


def run_point(point: Point) -> dict[str, Any]:
    """Simulate one point; the CSV row (runs in a worker process)."""
    programs = generate(
        point.workload,
        rate=point.rate,
        programs=point.programs,
        seed=point.seed,
        tool_scale=point.tool_scale,
        fresh=point.fresh,
        specs=point.specs,
    )
    policy = make_policy(point.policy, point.policy_config)
    result = Simulator(point.config, policy).run(programs)
    row: dict[str, Any] = {
        "workload": point.workload,
        "policy": point.policy,
        "rate": point.rate,
        "load": point.load,
        "seed": point.seed,
    }
    row.update(dataclasses.asdict(metrics(result)))
    return row


def _split(value: str | None, default: Sequence[str]) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def _policy_configs(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--policy-config {item!r}: expected NAME=JSON")
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError(f"--policy-config {item!r}: the JSON must be an object")
        out[name.strip()] = value
    return out


def plan(args: argparse.Namespace) -> list[Point]:
    """Every point of the sweep the arguments describe."""
    workloads = _split(args.workloads, WORKLOAD_NAMES)
    for w in workloads:
        if w not in WORKLOAD_NAMES:
            raise ValueError(f"unknown workload {w!r}; known: {', '.join(WORKLOAD_NAMES)}")
    policies = _split(args.policies, QUICK_POLICIES if args.quick else POLICIES)
    configs = _policy_configs(args.policy_config)
    if args.engines < 1 or (args.programs is not None and args.programs < 1):
        raise ValueError("--engines and --programs must be at least 1")
    if args.rerank_interval <= 0 or args.latency_factor <= 0 or args.tool_scale < 0:
        raise ValueError(
            "--rerank-interval and --latency-factor must be positive, --tool-scale not negative"
        )
    cost = PRESETS[args.preset]()
    shape = EngineShape(
        cost=cost, prefix_cache=not args.no_prefix_cache, preemption=args.preemption
    )
    config = SimConfig(
        engines=args.engines,
        shape=shape,
        balancer=args.balancer,
        preempt=PreemptConfig(),
        rerank_interval_s=args.rerank_interval,
    )
    # Faster engines (and more of them) move the knee: scale the default grid by decode speed.
    reference = PRESETS["llama31-8b-a100"]()
    speed = _decode_step(reference) / _decode_step(cost) * args.engines
    loads = QUICK_LOADS if args.quick else LOADS
    specs = paper_workloads()  # solved once, shipped with every point
    points = []
    for workload in workloads:
        base = BASE_RATES[args.context][workload] * speed
        if args.rates:
            pairs = [(r, r / base) for r in sorted(float(r) for r in args.rates.split(","))]
        else:
            pairs = [(base * f, f) for f in loads]
        sizes = FRESH_PROGRAMS if args.context == "fresh" else PROGRAMS
        n = args.programs or (QUICK_PROGRAMS if args.quick else sizes)[workload]
        for policy in policies:
            for rate, load in pairs:
                if rate <= 0:
                    raise ValueError("rates must be positive")
                points.append(
                    Point(
                        workload,
                        policy,
                        configs.get(policy, {}),
                        round(rate, 6),
                        round(load, 4),
                        n,
                        args.seed,
                        config,
                        args.tool_scale,
                        args.context == "fresh",
                        specs,
                    )
                )
    return points


def _decode_step(cost: Any) -> float:
    return float(
        cost.step_time(
            num_decodes=32,
            decode_context_tokens=32 * 1024,
            num_prefill_tokens=0,
            prefill_attn_pairs=0,
        )
    )


class Progress:
    """A progress bar on a terminal, a line per tenth of the work elsewhere."""

    def __init__(self, total: int, stream: TextIO, label: str = "points") -> None:
        self.total, self.stream, self.label = total, stream, label
        self.done = 0
        self.start = time.monotonic()
        self._tty = stream.isatty()
        self._last_tenth = -1

    def advance(self, note: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        if self._tty:
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{self.label} {elapsed:5.0f}s eta {eta:4.0f}s {note[:40]:40s}"
            )
            if self.done == self.total:
                self.stream.write("\n")
        else:
            tenth = 10 * self.done // max(self.total, 1)
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(
                    f"{self.done}/{self.total} {self.label} {elapsed:.0f}s eta {eta:.0f}s\n"
                )
        self.stream.flush()


def sweep(
    points: Sequence[Point], *, jobs: int, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Run every point, in worker processes when ``jobs`` > 1; rows in plan order."""
    # Costliest first, so that the workers finish together.
    order = sorted(range(len(points)), key=lambda i: -_cost_hint(points[i]))
    rows: list[dict[str, Any] | None] = [None] * len(points)

    def done(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if progress is not None:
            progress.advance(f"{row['workload']} {row['policy']} {row['rate']:g}/s")

    if jobs <= 1:
        for i in order:
            done(i, run_point(points[i]))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(run_point, points[i]): i for i in order}
            for future in _as_completed(futures):
                done(futures[future], future.result())
    return [r for r in rows if r is not None]


def _as_completed(futures: Mapping[Any, int]) -> Iterable[Any]:
    from concurrent.futures import as_completed

    return as_completed(futures)


def _cost_hint(point: Point) -> float:
    per_program = {"chatbot": 1.0, "react": 1.0, "lats": 12.0, "mixed": 5.0}
    return point.programs * per_program.get(point.workload, 1.0) * (1 + point.load)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def run_bench(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run the sweep ``args`` describe; 0 on success, 2 on bad arguments."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    started = clock()
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
    wall = clock() - started
    summary, notes = ratios(rows, args.latency_factor)
    sensitivity = {str(f): ratios(rows, f)[0] for f in EXTRA_FACTORS}
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
    write_csv(rows, out / "points.csv")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    meta = {
        "argv": {k: v for k, v in vars(args).items() if _jsonable(v)},
        "latency_factor": args.latency_factor,
        "targets_and_reach": notes,
        "ratios_at_other_factors": sensitivity,
        "speed": speed,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if not args.no_plots:
        from proxy.sim.plot import plot_sweep

        plot_sweep(
            rows,
            out,
            targets={w: n["targets"] for w, n in notes.items()},
            title=f"{args.preset}, {args.engines} engine(s), context {args.context}, seed {args.seed}",
        )
    out_stream.write(
        f"Throughput at equal latency (target: {args.latency_factor:g} x fcfs at the lowest rate)\n"
    )
    out_stream.write(format_table(summary) + "\n")
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
