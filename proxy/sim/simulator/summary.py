"""A sweep's summary: each policy's throughput at equal latency against the baselines
(summary.json), and the table ``autellix bench`` prints from it.

Every ratio is read from the curves of ``results`` (``curve``, ``rate_at``): for every
workload and policy, the arrival rate where the policy's latency curve crosses a target, over
the baseline's rate at the same target; the target is a multiple of fcfs's latency at the
lowest rate (``latency_target``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from proxy.sim.simulator.baselines import CONTINUUM, SRPT_CAPPED, VLLM_BASELINE
from proxy.sim.simulator.results import bracket, curve, latency_target, rate_at

PEERS = ("mlfq", CONTINUUM, "llmd-las", "turn-priority", SRPT_CAPPED)
"""Baselines every policy is also compared with, at fcfs's target, when their curve was swept."""

# (summary name, baseline curve, latency column, the curve whose light-load latency sets the
# target). fcfs and the peers are read at fcfs's target, as the paper compares every system
# at one latency; vLLM 0.6 starts several times slower, so it is read at its own target (where
# it is still steady), and a ratio against it is the rate a policy sustains at vLLM's latency.
METRICS = (
    ("throughput_ratio_vs_fcfs", "fcfs", "latency_mean", "fcfs"),
    ("p99_ratio_vs_fcfs", "fcfs", "latency_p99", "fcfs"),
    *((f"throughput_ratio_vs_{peer}", peer, "latency_mean", "fcfs") for peer in PEERS),
    ("throughput_ratio_vs_vllm", VLLM_BASELINE, "latency_mean", VLLM_BASELINE),
)


def target_key(column: str, target_curve: str) -> str:
    """How meta.json names a target: the column for fcfs's, ``column@curve`` for another's."""
    return column if target_curve == "fcfs" else f"{column}@{target_curve}"


def targets_of(
    rows: Sequence[Mapping[str, Any]], workload: str, factor: float
) -> dict[tuple[str, str], float]:
    """Every (column, target curve) a ratio is read at, with its target; a baseline with no
    curve in the rows has none."""
    present = {str(r["policy"]) for r in rows if r["workload"] == workload}
    out: dict[tuple[str, str], float] = {}
    for _, _, column, target_curve in METRICS:
        if target_curve != "fcfs" and target_curve not in present:
            continue
        out[(column, target_curve)] = latency_target(rows, workload, column, factor, target_curve)
    return out


def ratios(
    rows: Sequence[Mapping[str, Any]], factor: float, *, steady: bool = True
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    """summary.json's content at one latency factor, and the targets and bounds behind it.
    ``steady``: a point the engines fell behind on (``served_share`` under ``STEADY_SERVED``)
    counts as over the target; False reads every finite run's latency as measured (the
    paper's reading of a fixed trace, where an overloaded run's mean can stay low).

    Each ratio comes with ``<name>_is``: "exact" (both curves cross the target within the
    swept rates), "lower bound" (the policy's curve never crosses it: its rate is at least the
    highest swept), "upper bound" (the baseline's never does) or "unknown" (neither does, or
    one starts above the target; the ratio is then None rather than a misleading 1.0)."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    notes: dict[str, Any] = {}
    for workload in sorted({str(r["workload"]) for r in rows}):
        policies = sorted({str(r["policy"]) for r in rows if r["workload"] == workload})
        targets = targets_of(rows, workload, factor)
        reach: dict[str, dict[str, Any]] = {}
        for (column, target_curve), target in targets.items():
            for policy in policies:
                rates, values = curve(rows, workload, policy, column, steady=steady)
                at = rate_at(rates, values, target)
                reach.setdefault(policy, {})[target_key(column, target_curve)] = (
                    None
                    if at is None
                    else {
                        "rate": at.rate,
                        "bounded": at.bounded,
                        "late_share": _late_share(rows, workload, policy, rates, values, target),
                    }
                )
        entries: dict[str, dict[str, Any]] = {}
        for p in policies:
            entry: dict[str, Any] = {}
            for name, baseline, column, target_curve in METRICS:
                if (column, target_curve) not in targets or baseline not in policies:
                    continue  # no such baseline swept: no such ratio
                key = target_key(column, target_curve)
                entry[name], entry[f"{name}_is"] = _ratio(reach, p, baseline, key)
            entries[p] = entry
        summary[workload] = entries
        notes[workload] = {
            "targets": {target_key(c, t): v for (c, t), v in targets.items()},
            "rate_at_target": reach,
        }
    return summary, notes


def _late_share(
    rows: Sequence[Mapping[str, Any]],
    workload: str,
    policy: str,
    rates: Sequence[float],
    values: Sequence[float],
    target: float,
) -> float | None:
    """The ``late_share`` of the point just past the crossing (how far from a steady state the
    crossing was measured); None when the rows have no such column or the curve never
    crossed."""
    around = bracket(rates, values, target)
    if around is None:
        return None
    for r in rows:
        if r["workload"] == workload and r["policy"] == policy and float(r["rate"]) == around[1]:
            return float(r["late_share"]) if "late_share" in r else None
    return None


def _ratio(
    reach: Mapping[str, Mapping[str, Any]], policy: str, baseline: str, column: str
) -> tuple[float | None, str]:
    ours = reach.get(policy, {}).get(column)
    theirs = reach.get(baseline, {}).get(column)
    if ours is None or theirs is None or theirs["rate"] <= 0:
        return None, "unknown"
    if policy == baseline:
        return 1.0, "exact"
    kind = {
        (True, True): "exact",
        (False, True): "lower bound",
        (True, False): "upper bound",
        (False, False): "unknown",
    }[(bool(ours["bounded"]), bool(theirs["bounded"]))]
    return (None if kind == "unknown" else float(ours["rate"] / theirs["rate"])), kind


COLUMNS = (
    ("throughput_ratio_vs_fcfs", "vs fcfs"),
    ("p99_ratio_vs_fcfs", "p99 vs fcfs"),
    ("throughput_ratio_vs_mlfq", "vs mlfq"),
    (f"throughput_ratio_vs_{CONTINUUM}", "vs contin."),
    ("throughput_ratio_vs_llmd-las", "vs llmd-las"),
    ("throughput_ratio_vs_turn-priority", "vs turn-pr."),
    (f"throughput_ratio_vs_{SRPT_CAPPED}", "vs srpt-cap"),
    ("throughput_ratio_vs_vllm", "vs vLLM 0.6"),
)


def format_table(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Throughput at equal latency, each policy against fcfs (and P99 vs fcfs), each peer
    baseline and vLLM 0.6, the columns of the baselines swept only; a lower bound reads ">",
    an upper bound "<", unknown "-". A cell may be a plain ratio or, over several seeds,
    ``{"median", "min", "max", ...}`` (``seeds.spread``): the median, with vs fcfs's range."""

    def value(r: Mapping[str, Any], name: str) -> tuple[float | None, Any]:
        v = r.get(name)
        if isinstance(v, Mapping):
            return v.get("median"), v
        return v, None

    def cell(r: Mapping[str, Any], name: str, width: int) -> str:
        v, _ = value(r, name)
        if v is None:
            return "-".rjust(width)
        mark = {"lower bound": ">", "upper bound": "<"}.get(str(r.get(f"{name}_is")), "")
        return f"{mark}{v:.2f}".rjust(width)

    present = [
        (name, label)
        for name, label in COLUMNS
        if any(name in r for policies in summary.values() for r in policies.values())
    ]
    spread = any(
        value(r, "throughput_ratio_vs_fcfs")[1] is not None
        for policies in summary.values()
        for r in policies.values()
    )
    head = f"{'workload':18s} {'policy':14s}"
    for name, label in present:
        head += f" {label:>11s}"
        if spread and name == "throughput_ratio_vs_fcfs":
            head += f" {'(min-max)':>11s}"
    lines = [head]
    for workload, policies in summary.items():
        for policy, r in policies.items():
            line = f"{workload[:18]:18s} {policy[:14]:14s}"
            for name, _ in present:
                line += " " + cell(r, name, 11)
                if spread and name == "throughput_ratio_vs_fcfs":
                    _, s = value(r, name)
                    rng = (
                        f"{s['min']:.2f}-{s['max']:.2f}" if s and s.get("min") is not None else "-"
                    )
                    line += f" {rng:>11s}"
            lines.append(line)
    return "\n".join(lines)
