"""Several seeds per point: a sweep's rows split by seed, and the median curve over seeds.

A single seed is not enough (one workload's fcfs latency at one rate moved 3x from seed to seed),
so every point runs for ``--seeds`` seeds; a ratio is read on each seed's own curves and
reported as the median over seeds with its range (``summary.spread``), and curves that are drawn
or refined use the median over seeds at each rate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]

_KEYS = ("workload", "policy", "rate")


def by_seed(rows: Sequence[Row]) -> dict[int, list[Row]]:
    """The rows of each seed (rows without a seed count as seed 0)."""
    out: dict[int, list[Row]] = {}
    for r in rows:
        out.setdefault(int(r.get("seed", 0)), []).append(r)
    return dict(sorted(out.items()))


def median(values: Sequence[float]) -> float:
    """The median of the finite values and infinities (NaN dropped); NaN for none."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def median_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One row per (workload, policy, rate): every numeric column the median over its seeds,
    other columns from the first; ``seeds`` says how many there were. Rows of a single seed
    come back as they were (copied)."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in _KEYS), []).append(r)
    out: list[dict[str, Any]] = []
    for group in groups.values():
        row: dict[str, Any] = dict(group[0])
        if len(group) > 1:
            for key, value in group[0].items():
                if key in _KEYS or key == "seed" or isinstance(value, str | bool):
                    continue
                try:
                    row[key] = median([float(g[key]) for g in group])
                except (TypeError, ValueError):
                    continue
        row["seeds"] = len(group)
        out.append(row)
    return out


def spread(
    rows: Sequence[Row], factor: float, *, steady: bool = True
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, Any]]:
    """``summary.ratios`` read on each seed's own rows, folded into one summary: every ratio
    becomes ``{"median", "min", "max", "n", "seeds"}`` over the seeds where it is known (``n``
    of ``seeds``), and ``<ratio>_is`` the kind all those seeds agree on, else the commonest
    bound ("lower bound" wins a tie: a policy still steady past the grid is the reading to
    flag). The notes give each seed's targets and rates at them."""
    from proxy.sim.simulator.summary import ratios

    per_seed = {
        seed: ratios(seeded, factor, steady=steady) for seed, seeded in by_seed(rows).items()
    }
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for summary, _ in per_seed.values():
        for workload, policies in summary.items():
            for policy, entry in policies.items():
                slot = out.setdefault(workload, {}).setdefault(policy, {})
                for name, v in entry.items():
                    if not name.endswith("_is"):
                        slot.setdefault(name, []).append((v, entry.get(f"{name}_is")))
    folded: dict[str, dict[str, dict[str, Any]]] = {}
    for workload, policies in out.items():
        for policy, entry in policies.items():
            target = folded.setdefault(workload, {}).setdefault(policy, {})
            for name, pairs in entry.items():
                known = [(float(v), kind) for v, kind in pairs if v is not None]
                values = [v for v, _ in known]
                target[name] = {
                    "median": median(values) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                    "n": len(values),
                    "seeds": len(pairs),
                }
                kinds = [str(kind) for _, kind in known]
                if not kinds:
                    target[f"{name}_is"] = "unknown"
                elif all(k == kinds[0] for k in kinds):
                    target[f"{name}_is"] = kinds[0]
                else:
                    bounds = [k for k in kinds if k != "exact"]
                    target[f"{name}_is"] = max(
                        ("lower bound", "upper bound"),
                        key=lambda k: (bounds.count(k), k == "lower bound"),
                    )
    notes = {str(seed): note for seed, (_, note) in per_seed.items()}
    return folded, notes
