"""Several seeds per point: median curves, and ratios read per seed then folded."""

from __future__ import annotations

import math

import pytest

from proxy.sim.simulator.seeds import by_seed, median_rows, spread


def rows_for(curves: dict[int, dict[str, list[float]]]) -> list[dict[str, object]]:
    return [
        {"workload": "w", "policy": p, "rate": r, "seed": seed, "latency_mean": m,
         "latency_p99": 2 * m, "served_share": 1.0}
        for seed, by_policy in curves.items()
        for p, curve in by_policy.items()
        for r, m in zip((1.0, 2.0, 3.0), curve, strict=True)
    ]  # fmt: skip


def test_median_rows_take_the_median_of_each_numeric_column() -> None:
    rows = rows_for({0: {"fcfs": [1, 2, 3]}, 1: {"fcfs": [1, 4, 9]}, 2: {"fcfs": [1, 8, 27]}})
    medians = {(r["policy"], r["rate"]): r for r in median_rows(rows)}
    assert medians[("fcfs", 2.0)]["latency_mean"] == 4
    assert medians[("fcfs", 3.0)]["latency_p99"] == 18
    assert medians[("fcfs", 3.0)]["seeds"] == 3
    assert sorted(by_seed(rows)) == [0, 1, 2]


def test_spread_reads_each_seed_and_reports_median_and_range() -> None:
    # Target 2 x 1 = 2. fcfs crosses at 1.5 on every seed; plas at 2.5, 2.0 and never (>= 3).
    rows = rows_for({
        0: {"fcfs": [1, 4, 16], "plas": [1, 1, 4]},
        1: {"fcfs": [1, 4, 16], "plas": [1, 2, 8]},
        2: {"fcfs": [1, 4, 16], "plas": [1, 1, 1.5]},
    })  # fmt: skip
    summary, notes = spread(rows, 2.0)
    entry = summary["w"]["plas"]["throughput_ratio_vs_fcfs"]
    assert entry["median"] == pytest.approx(2.5 / 1.5)
    assert (entry["min"], entry["max"]) == (pytest.approx(2.0 / 1.5), pytest.approx(3.0 / 1.5))
    assert (entry["n"], entry["seeds"]) == (3, 3)
    # Two seeds exact, one a lower bound: the flag is the bound.
    assert summary["w"]["plas"]["throughput_ratio_vs_fcfs_is"] == "lower bound"
    assert summary["w"]["fcfs"]["throughput_ratio_vs_fcfs_is"] == "exact"
    assert set(notes) == {"0", "1", "2"}


def test_a_ratio_unknown_on_every_seed_stays_unknown() -> None:
    rows = rows_for({0: {"fcfs": [1, 4, 16], "plas": [9, 9, 9]}})
    summary, _ = spread(rows, 2.0)
    entry = summary["w"]["plas"]["throughput_ratio_vs_fcfs"]
    assert entry["median"] is None
    assert summary["w"]["plas"]["throughput_ratio_vs_fcfs_is"] == "unknown"
    assert math.isnan(median_rows([{"workload": "w", "policy": "a", "rate": 1, "x": math.nan},
                                   {"workload": "w", "policy": "a", "rate": 1, "x": math.nan}])[0]["x"])  # fmt: skip
