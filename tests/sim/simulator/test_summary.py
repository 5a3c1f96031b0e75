"""A sweep's summary: throughput ratios at equal latency, their bounds, and the printed table."""

from __future__ import annotations

import math

import pytest

from proxy.sim.simulator.results import RateAt, curve, rate_at
from proxy.sim.simulator.summary import format_table, ratios


def test_ratios_read_each_curve_at_the_target() -> None:
    rows = [
        {"workload": "w", "policy": p, "rate": r, "latency_mean": m, "latency_p99": m * 2}
        for p, curve in {"fcfs": [1, 4, 16], "mlfq": [1, 2, 8], "plas": [1, 1, 4]}.items()
        for r, m in zip((1.0, 2.0, 3.0), curve, strict=True)
    ]
    summary, notes = ratios(rows, 2.0)
    assert notes["w"]["targets"] == {"latency_mean": 2.0, "latency_p99": 4.0}
    # fcfs crosses 2 at 1.5, mlfq at 2.0, plas at 2.5 (halfway in log latency).
    assert summary["w"]["plas"]["throughput_ratio_vs_fcfs"] == pytest.approx(2.5 / 1.5)
    assert summary["w"]["plas"]["throughput_ratio_vs_mlfq"] == pytest.approx(2.5 / 2.0)
    assert summary["w"]["plas"]["p99_ratio_vs_fcfs"] == pytest.approx(2.5 / 1.5)
    assert "plas" in format_table(summary)


def test_vllm_06_is_read_at_its_own_target_and_only_when_swept() -> None:
    # vLLM 0.6 starts 4x slower than fcfs (factor 2: its target is 8 and fcfs's 2).
    curves = {"vllm-0.6": [4, 8, 32], "fcfs": [1, 4, 16], "plas": [1, 1, 16]}
    rows = [
        {"workload": "w", "policy": p, "rate": r, "latency_mean": m, "latency_p99": m * 2}
        for p, curve in curves.items()
        for r, m in zip((1.0, 2.0, 3.0), curve, strict=True)
    ]
    summary, notes = ratios(rows, 2.0)
    assert notes["w"]["targets"] == {
        "latency_mean": 2.0,
        "latency_p99": 4.0,
        "latency_mean@vllm-0.6": 8.0,
    }
    # At 8: vLLM 0.6 reaches 2.0, fcfs 2.5 (log-halfway from 4 to 16), plas 2.75 (1 to 16).
    assert summary["w"]["fcfs"]["throughput_ratio_vs_vllm"] == pytest.approx(2.5 / 2.0)
    assert summary["w"]["plas"]["throughput_ratio_vs_vllm"] == pytest.approx(2.75 / 2.0)
    assert summary["w"]["plas"]["throughput_ratio_vs_vllm_is"] == "exact"
    # vLLM 0.6 never meets fcfs's target of 2: no ratio rather than a made-up one.
    assert summary["w"]["vllm-0.6"]["throughput_ratio_vs_fcfs"] is None
    assert "vs vLLM 0.6" in format_table(summary)
    without, _ = ratios([r for r in rows if r["policy"] != "vllm-0.6"], 2.0)
    assert "throughput_ratio_vs_vllm" not in without["w"]["plas"]
    assert "vs vLLM 0.6" not in format_table(without)


def test_ratios_mark_bounds_instead_of_a_misleading_one() -> None:
    curves = {
        "fcfs": [1.0, 1.0, 4.0],  # crosses 2 at 2.5
        "mlfq": [1.0, 1.0, 1.5],  # never crosses: rate >= 3
        "plas": [1.0, 1.0, 1.5],
        "srpt": [1.0, 1.0, 1.0],
    }
    rows = [
        {
            "workload": "w",
            "policy": p,
            "rate": r,
            "latency_mean": m,
            "latency_p99": m,
            "late_share": r / 10,
        }
        for p, curve in curves.items()
        for r, m in zip((1.0, 2.0, 3.0), curve, strict=True)
    ]
    summary, notes = ratios(rows, 2.0)
    plas = summary["w"]["plas"]
    assert plas["throughput_ratio_vs_fcfs"] == pytest.approx(3.0 / 2.5)
    assert plas["throughput_ratio_vs_fcfs_is"] == "lower bound"
    assert plas["throughput_ratio_vs_mlfq"] is None  # neither crossed: not 1.0
    assert plas["throughput_ratio_vs_mlfq_is"] == "unknown"
    assert summary["w"]["fcfs"]["throughput_ratio_vs_mlfq_is"] == "upper bound"
    assert summary["w"]["fcfs"]["throughput_ratio_vs_fcfs_is"] == "exact"
    assert notes["w"]["rate_at_target"]["plas"]["latency_mean"]["bounded"] is False
    assert notes["w"]["rate_at_target"]["plas"]["latency_mean"]["late_share"] is None
    # fcfs crossed between 2 and 3: the share of late finishers at 3 is reported.
    assert notes["w"]["rate_at_target"]["fcfs"]["latency_mean"]["late_share"] == 0.3
    table = format_table(summary)
    assert " >1.20" in table
    assert " <0.83" in table


def test_a_point_the_engines_fell_behind_on_counts_as_over_the_target() -> None:
    # A finite run past saturation can keep a low mean latency (srpt finishes the small
    # programs and leaves the big ones to the drain): its served share gives it away.
    rows = [
        {"workload": "w", "policy": p, "rate": r, "latency_mean": m, "latency_p99": m,
         "served_share": s}
        for p, curve in {
            "fcfs": [(1.0, 1.0), (1.0, 1.0), (4.0, 0.95)],
            "srpt": [(1.0, 1.0), (1.0, 1.0), (1.2, 0.6)],  # low latency, not steady
        }.items()
        for r, (m, s) in zip((1.0, 2.0, 3.0), curve, strict=True)
    ]  # fmt: skip
    assert curve(rows, "w", "srpt", "latency_mean") == ([1.0, 2.0, 3.0], [1.0, 1.0, math.inf])
    assert curve(rows, "w", "srpt", "latency_mean", steady=False)[1] == [1.0, 1.0, 1.2]
    at = rate_at([1.0, 2.0, 3.0], [1.0, 1.0, math.inf], 2.0)
    assert at == RateAt(2.0, True)  # the last steady rate
    summary, _ = ratios(rows, 2.0)
    assert summary["w"]["srpt"]["throughput_ratio_vs_fcfs"] == pytest.approx(2.0 / 2.5)
    assert summary["w"]["srpt"]["throughput_ratio_vs_fcfs_is"] == "exact"
