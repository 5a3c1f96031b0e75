"""The sweep behind ``autellix bench``: the default rate grid, one ``Point`` per arrival rate x
policy x workload, and running the points, in worker processes when asked.

Each point simulates the same programs (same seed: common random numbers) at one arrival rate
under one policy, built by name through the policy registry, so a plug-in policy runs here
unchanged.

Rates. The coarse grid of a workload is its ``BASE_RATES`` entry (near where fcfs starts to
queue on one A100 engine) times ``LOADS``, scaled by the number of engines and the preset's
speed relative to the A100; ``--rates`` replaces it. ``refine`` then adds points where each
curve crosses the latency target (between the last swept rate under it and the first over it:
for fcfs that is its knee), and extends a curve that never crossed it past the grid once.

Cases. A case is a workload under one context mode and length spread: ``chatbot`` (resent
contexts), ``chatbot-fresh`` (``--context fresh``), ``chatbot-sigma1.5`` (``--sigma``: chatbot's
lognormal sigmas times 1.5); rows name the case in their ``workload`` column, with ``kind``,
``context`` and ``sigma`` beside it. Every point runs for ``--seeds`` seeds (``seeds.py``).

Steady state. Each point measures only the programs of its steady-state window
(``results.steady_window``): the first ``--warmup`` share of the programs (they meet an empty
system) and the last ``--cooldown`` share (they keep the engine loaded while the measured ones
finish) are simulated but not measured.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from proxy.policies.base import Policy
from proxy.policies.registry import PolicyRegistry
from proxy.sim.engine.cost import PRESETS
from proxy.sim.simulator.baselines import (
    CONTINUUM,
    FCFS_RETAIN,
    SRPT_CAPPED,
    VLLM_BASELINE,
    engine_config,
    registry_name,
)
from proxy.sim.simulator.gauges import GaugedSimulator, measured_span
from proxy.sim.simulator.progress import Progress
from proxy.sim.simulator.refine import EXTEND as EXTEND
from proxy.sim.simulator.refine import refine as refine
from proxy.sim.simulator.results import Metrics, metrics, steady_window
from proxy.sim.simulator.simconfig import SimConfig, config_from_args
from proxy.sim.simulator.workloads import (
    WORKLOAD_NAMES,
    WorkloadSpec,
    generate,
    paper_workloads,
    with_sigma,
)

# Programs per second near which fcfs starts to queue on one A100 engine, measured with
# resent and with fresh contexts (docs/simulator.md); the default grid is LOADS times these.
BASE_RATES = {
    "resend": {"chatbot": 1.3, "react": 0.5, "lats": 0.07, "mixed": 0.18},
    "fresh": {"chatbot": 2.8, "react": 1.0, "lats": 0.12, "mixed": 0.3},
}
# The coarse grid (the lowest load is the light-load reference of the latency target); the
# refinement pass adds REFINE_POINTS rates inside each curve's crossing of the target.
LOADS = (0.4, 0.7, 1.0, 1.3, 1.7, 2.2)
QUICK_LOADS = (0.4, 1.0, 1.7, 3.0)
REFINE_POINTS = 1
QUICK_REFINE_POINTS = 1
# Programs per point, of which the steady window measures 60%. Fewer make ``served_share``
# read low at light load (a program still running at the last arrival counts as not served,
# and LATS programs run for minutes), so the steady reading would cut curves early.
PROGRAMS = {"chatbot": 800, "react": 600, "lats": 150, "mixed": 300}
FRESH_PROGRAMS = {"chatbot": 1500, "react": 800, "lats": 150, "mixed": 300}
# Fewer programs make the overloaded points short transients: quick ratios are indicative only.
QUICK_PROGRAMS = {"chatbot": 800, "react": 600, "lats": 80, "mixed": 150}
SEEDS = 5
QUICK_SEEDS = 1
WARMUP = 0.2
COOLDOWN = 0.2
POLICIES = (
    VLLM_BASELINE,
    "fcfs",
    FCFS_RETAIN,
    "mlfq",
    "plas",
    "atlas",
    "srpt",
    SRPT_CAPPED,
    CONTINUUM,
    "llmd-las",
    "turn-priority",
)
"""``fcfs+retain`` is the ablation: arrival order with the plug-in's retention (``baselines``)."""
QUICK_POLICIES = (VLLM_BASELINE, "fcfs", "plas", "atlas", CONTINUUM, "llmd-las")
CONTEXTS = ("resend", "fresh")
VLLM06_RATE_SCALE = 0.25
"""The vLLM 0.6 curve's grid is the workload's times this: without a prefix cache it saturates
at 0.2 to 0.4 times the rates the other engines sustain (resent contexts are recomputed)."""
BASELINES = ("fcfs", "mlfq")
EXTRA_FACTORS = (2.0, 3.0)
"""Latency targets read beside the headline (``--latency-factor``, 1.5)."""

CSV_COLUMNS = (
    "workload",
    "kind",
    "context",
    "sigma",
    "policy",
    "rate",
    "load",
    "seed",
    *(f.name for f in dataclasses.fields(Metrics)),
)


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
    warmup: float = WARMUP
    cooldown: float = COOLDOWN
    case: str = ""
    """The rows' ``workload``: the workload, context mode and sigma (``case_name``)."""
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if not self.case:
            object.__setattr__(self, "case", case_name(self.workload, self.fresh, self.sigma))


def case_name(workload: str, fresh: bool, sigma: float) -> str:
    """``chatbot``, ``chatbot-fresh``, ``chatbot-sigma1.5``, ``chatbot-fresh-sigma0.5``."""
    return workload + ("-fresh" if fresh else "") + ("" if sigma == 1.0 else f"-sigma{sigma:g}")


def make_policy(name: str, config: Mapping[str, Any] | None = None) -> Policy:
    """The policy of a curve: a registry name or path, or a pseudo-policy's order
    (``baselines.registry_name``)."""
    return PolicyRegistry().create(registry_name(name), dict(config or {}))


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
    window = steady_window(len(programs), point.warmup, point.cooldown)
    measured = {programs[i].id for i in window}
    policy = make_policy(point.policy, point.policy_config)
    simulator = GaugedSimulator(point.config, policy, measured_span(programs, window))
    result = simulator.run(programs)
    row: dict[str, Any] = {
        "workload": point.case,
        "kind": point.workload,
        "context": "fresh" if point.fresh else "resend",
        "sigma": point.sigma,
        "policy": point.policy,
        "rate": point.rate,
        "load": point.load,
        "seed": point.seed,
    }
    row.update(dataclasses.asdict(metrics(result, measured)))
    return row


def split_names(value: str | None, default: Sequence[str]) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def policy_configs(items: Iterable[str]) -> dict[str, dict[str, Any]]:
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
    workloads = split_names(args.workloads, WORKLOAD_NAMES)
    for w in workloads:
        if w not in WORKLOAD_NAMES:
            raise ValueError(f"unknown workload {w!r}; known: {', '.join(WORKLOAD_NAMES)}")
    policies = split_names(args.policies, QUICK_POLICIES if args.quick else POLICIES)
    configs = policy_configs(args.policy_config)
    if (
        args.engines < 1
        or args.max_num_seqs < 1
        or (args.programs is not None and args.programs < 1)
    ):
        raise ValueError("--engines, --max-num-seqs and --programs must be at least 1")
    if args.rerank_interval <= 0 or args.latency_factor <= 0 or args.tool_scale < 0:
        raise ValueError(
            "--rerank-interval and --latency-factor must be positive, --tool-scale not negative"
        )
    steady_window(100, args.warmup, args.cooldown)  # refuses bad shares
    if args.refine is not None and args.refine < 0:
        raise ValueError("--refine must not be negative")
    contexts = split_names(args.context, ("resend",) if args.quick else CONTEXTS)
    if not contexts or any(c not in CONTEXTS for c in contexts):
        raise ValueError(f"--context takes a comma list of {' and '.join(CONTEXTS)}")
    sigmas = [float(v) for v in split_names(args.sigma, ("1",))]
    if any(not v >= 0 for v in sigmas):
        raise ValueError("--sigma takes non-negative scales of the lognormal sigmas")
    seeds = seed_count(args)
    config = config_from_args(args)
    auto = getattr(args, "kv_evict", "lru") == "auto"
    cost = config.shape.cost
    # Faster engines (and more of them) move the knee: scale the default grid by decode speed.
    reference = PRESETS["llama31-8b-a100"]()
    speed = _decode_step(reference) / _decode_step(cost) * args.engines
    loads = QUICK_LOADS if args.quick else LOADS
    specs = paper_workloads()  # solved once, shipped with every point
    points = []
    for context, workload in itertools.product(contexts, workloads):
        base = BASE_RATES[context][workload] * speed
        if args.rates:
            pairs = [(r, r / base) for r in sorted(float(r) for r in args.rates.split(","))]
        else:
            pairs = [(base * f, f) for f in loads]
        sizes = FRESH_PROGRAMS if context == "fresh" else PROGRAMS
        n = args.programs or (QUICK_PROGRAMS if args.quick else sizes)[workload]
        # The length-spread sweep is chatbot's, under the first context listed.
        spreads = sigmas if workload == "chatbot" and context == contexts[0] else [1.0]
        for sigma, policy in itertools.product(spreads, policies):
            shaped = with_sigma(specs, "chatbot", sigma) if sigma != 1.0 else specs
            scale = VLLM06_RATE_SCALE if policy == VLLM_BASELINE and not args.rates else 1.0
            for (rate, load), seed in itertools.product(
                [(r * scale, f * scale) for r, f in pairs], range(args.seed, args.seed + seeds)
            ):
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
                        seed,
                        engine_config(policy, config, workload, auto_retention=auto),
                        args.tool_scale,
                        context == "fresh",
                        shaped,
                        args.warmup,
                        args.cooldown,
                        sigma=sigma,
                    )
                )
    return points


def seed_count(args: argparse.Namespace) -> int:
    """Seeds per point: ``--seeds``, else SEEDS (QUICK_SEEDS with ``--quick``)."""
    seeds = args.seeds if args.seeds is not None else (QUICK_SEEDS if args.quick else SEEDS)
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    return int(seeds)


def refine_count(args: argparse.Namespace) -> int:
    """Points the refinement pass adds per crossing: ``--refine``, else none for given
    ``--rates`` and REFINE_POINTS (QUICK_REFINE_POINTS with ``--quick``) for the default grid."""
    if args.refine is not None:
        return int(args.refine)
    if args.rates:
        return 0
    return QUICK_REFINE_POINTS if args.quick else REFINE_POINTS


def _decode_step(cost: Any) -> float:
    return float(
        cost.step_time(
            num_decodes=32,
            decode_context_tokens=32 * 1024,
            num_prefill_tokens=0,
            prefill_attn_pairs=0,
        )
    )


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
