"""``autellix bench --trace FILE``: replay a recorded trace under each policy.

The trace (JSON lines, ``trace.py``; the live proxy writes one with ``trace_file``) becomes
programs through ``workloads.from_trace``: every program arrives when it was recorded to, its
calls keep their recorded sizes, parents and tool gaps. There is no rate sweep: one run per
policy, each on the same programs, compared on program-level token latency.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import metrics
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.sweep import make_policy
from proxy.sim.simulator.workloads import ProgramSpec, from_trace
from proxy.trace import read_trace

WORKLOAD = "trace"
LATENCY_COLUMNS = ("latency_mean", "latency_p50", "latency_p95", "latency_p99")


def load_programs(path: str | Path) -> list[ProgramSpec]:
    """The programs a trace file holds. ``ValueError`` with a message fit for a user when the
    file cannot be read, a line is bad, or it holds no calls."""
    try:
        records = read_trace(path)
    except OSError as exc:
        raise ValueError(f"trace file {str(path)!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # read_trace names the bad line; UnicodeDecodeError lands here
        raise ValueError(f"trace file {str(path)!r}: {exc}") from exc
    programs = from_trace(records)
    if not programs:
        raise ValueError(f"trace file {str(path)!r} holds no calls")
    return programs


def arrival_rate(programs: Sequence[ProgramSpec]) -> float:
    """Programs per second between the first and the last recorded arrival (0 when they
    all arrive at once)."""
    span = max(p.arrival for p in programs) - min(p.arrival for p in programs)
    return (len(programs) - 1) / span if span > 0 else 0.0


def replay_row(
    programs: Sequence[ProgramSpec],
    policy: str,
    policy_config: Mapping[str, Any],
    config: SimConfig,
) -> dict[str, Any]:
    """Run the programs under one policy; the ``points.csv`` row (``sweep.CSV_COLUMNS``, with
    the workload ``trace``, the recorded arrival rate and no load or seed)."""
    result = Simulator(config, make_policy(policy, policy_config)).run(programs)
    row: dict[str, Any] = {
        "workload": WORKLOAD,
        "policy": policy,
        "rate": round(arrival_rate(programs), 6),
        "load": "",
        "seed": "",
    }
    row.update(dataclasses.asdict(metrics(result)))
    return row


def summary(rows: Sequence[Mapping[str, Any]], trace: str | Path) -> dict[str, Any]:
    """``summary.json``: the trace, its size, and each policy's program token latency."""
    first = rows[0] if rows else {}
    return {
        "trace": str(trace),
        "programs": first.get("programs", 0),
        "calls": first.get("calls", 0),
        "arrival_rate": first.get("rate", 0.0),
        "policies": {str(r["policy"]): {c: _finite(r[c]) for c in LATENCY_COLUMNS} for r in rows},
    }


def _finite(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def format_latency_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per policy: mean, P50, P95 and P99 program token latency (s/token)."""
    width = max([len("policy"), *(len(str(r["policy"])) for r in rows)])
    lines = [f"{'policy':<{width}}  " + "  ".join(f"{h:>9}" for h in ("mean", "p50", "p95", "p99"))]
    for r in rows:
        cells = "  ".join(f"{float(r[c]):9.4f}" for c in LATENCY_COLUMNS)
        lines.append(f"{r['policy']!s:<{width}}  {cells}")
    return "\n".join(lines)
