"""The engine state behind a sweep's ratios: what each policy's engines were doing at the
rate where fcfs reaches the headline latency target (median over seeds), so that a reader sees
why a ratio is what it is: with few calls waiting every order makes the same schedule; a low
prefix-hit share means contexts were evicted and recomputed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from proxy.sim.simulator.seeds import median, median_rows

STATE_COLUMNS = (
    "latency_mean",
    "latency_p99",
    "served_share",
    "running_mean",
    "waiting_mean",
    "waiting_share",
    "kv_use",
    "kv_cached",
    "prefix_hit_share",
    "kv_preemptions",
    "priority_preemptions",
)


def fcfs_rate(notes_by_seed: Mapping[str, Any], workload: str) -> float | None:
    """The median over seeds of the rate where fcfs's mean latency meets its target."""
    rates = []
    for notes in notes_by_seed.values():
        at = notes.get(workload, {}).get("rate_at_target", {}).get("fcfs", {})
        reading = at.get("latency_mean")
        if reading is not None:
            rates.append(float(reading["rate"]))
    return median(rates) if rates else None


def engine_state(
    rows: Sequence[Mapping[str, Any]], notes_by_seed: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per workload (case): the swept rate at or just under fcfs's rate at the target, and
    each policy's median engine state there (``STATE_COLUMNS``)."""
    medians = median_rows(rows)
    out: dict[str, dict[str, Any]] = {}
    for workload in sorted({str(r["workload"]) for r in medians}):
        at = fcfs_rate(notes_by_seed, workload)
        swept = sorted(
            {
                float(r["rate"])
                for r in medians
                if r["workload"] == workload and r["policy"] == "fcfs"
            }
        )
        if at is None or not swept:
            continue
        under = [r for r in swept if r <= at * (1 + 1e-9)]
        rate = under[-1] if under else swept[0]
        policies: dict[str, Any] = {}
        for r in medians:
            if r["workload"] == workload and math.isclose(float(r["rate"]), rate):
                policies[str(r["policy"])] = {c: float(r[c]) for c in STATE_COLUMNS if c in r}
        out[workload] = {"fcfs_rate_at_target": at, "rate": rate, "policies": policies}
    return out


def format_state(state: Mapping[str, Mapping[str, Any]]) -> str:
    """The engine state table ``autellix bench`` prints under the ratios."""
    head = (
        f"{'workload':18s} {'policy':14s} {'rate':>6s} {'lat':>7s} {'p99':>7s} {'run':>6s} "
        f"{'wait':>6s} {'wait%':>6s} {'kv':>5s} {'cache':>5s} {'hit':>5s} {'pre(kv/pr)':>11s}"
    )
    lines = [head]

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None or math.isnan(v) else format(v, fmt)

    for workload, entry in state.items():
        for policy, s in entry["policies"].items():
            lines.append(
                f"{workload[:18]:18s} {policy[:14]:14s} {entry['rate']:6.3g} "
                f"{f(s.get('latency_mean'), '.4f'):>7s} {f(s.get('latency_p99'), '.4f'):>7s} "
                f"{f(s.get('running_mean'), '.1f'):>6s} {f(s.get('waiting_mean'), '.1f'):>6s} "
                f"{f(s.get('waiting_share'), '.2f'):>6s} {f(s.get('kv_use'), '.2f'):>5s} "
                f"{f(s.get('kv_cached'), '.2f'):>5s} {f(s.get('prefix_hit_share'), '.2f'):>5s} "
                f"{f(s.get('kv_preemptions'), '.0f'):>5s}/{f(s.get('priority_preemptions'), '.0f'):<5s}"
            )
    return "\n".join(lines)


def p99_where_steady(rows: Sequence[Mapping[str, Any]], steady: float) -> dict[str, Any]:
    """Per case and policy: the worst ratio of its P99 to fcfs's (median over seeds) over the
    swept rates where both are steady (``served_share`` at least ``steady``), and its rate;
    above 1 means the policy's tail is worse than fcfs's somewhere fcfs keeps up."""
    medians = median_rows(rows)
    fcfs = {
        (str(r["workload"]), float(r["rate"])): r
        for r in medians
        if r["policy"] == "fcfs" and float(r.get("served_share", 1.0)) >= steady
    }
    out: dict[str, Any] = {}
    for r in medians:
        base = fcfs.get((str(r["workload"]), float(r["rate"])))
        if base is None or float(r.get("served_share", 1.0)) < steady:
            continue
        ratio = float(r["latency_p99"]) / float(base["latency_p99"])
        slot = out.setdefault(str(r["workload"]), {}).get(str(r["policy"]))
        if slot is None or ratio > slot["worst"]:
            out[str(r["workload"])][str(r["policy"])] = {"worst": ratio, "rate": float(r["rate"])}
    return out


def best_cap(notes_by_seed: Mapping[str, Any]) -> dict[str, Any]:
    """Per case, when ``srpt-k<k>`` curves were swept: each k's rate at the headline mean
    target (median over seeds) and the best k, the one ``srpt-capped`` should run
    (``baselines.SRPT_CAPPED_K``)."""
    from proxy.sim.simulator.baselines import srpt_k

    out: dict[str, Any] = {}
    workloads = {w for notes in notes_by_seed.values() for w in notes}
    for workload in sorted(workloads):
        rates: dict[int, float] = {}
        policies = {
            p
            for notes in notes_by_seed.values()
            for p in notes.get(workload, {}).get("rate_at_target", {})
        }
        for policy in policies:
            k = srpt_k(policy)
            if k is None:
                continue
            reached = []
            for notes in notes_by_seed.values():
                reading = notes[workload]["rate_at_target"].get(policy, {}).get("latency_mean")
                if reading is not None:
                    reached.append(float(reading["rate"]))
            if reached:
                rates[k] = median(reached)
        if rates:
            best = max(sorted(rates), key=lambda k: rates[k])
            out[workload] = {"best_k": best, "rate_by_k": dict(sorted(rates.items()))}
    return out
