"""Metrics of a run, and throughput at equal latency."""

from __future__ import annotations

import math

import pytest

from proxy.sim.results import (
    CallResult,
    ProgramResult,
    SimResult,
    format_table,
    metrics,
    percentile,
    rate_at,
    ratios,
    throughput_ratio,
)


def test_percentile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 95) == pytest.approx(3.85)
    assert math.isnan(percentile([], 50))


def test_metrics_of_a_hand_made_run() -> None:
    result = SimResult(
        programs=[
            ProgramResult("a", "x", arrival=0.0, finished=10.0, output_tokens=10, tool_s=2.0),
            ProgramResult("b", "x", arrival=2.0, finished=6.0, output_tokens=4),
        ],
        calls=[
            CallResult(
                "a",
                0,
                0,
                arrival=0.0,
                first_token=1.0,
                finished=5.0,
                prompt_tokens=100,
                output_tokens=5,
                cached_tokens=40,
            ),
            CallResult(
                "a",
                1,
                0,
                arrival=7.0,
                first_token=7.5,
                finished=10.0,
                prompt_tokens=100,
                output_tokens=5,
            ),
            CallResult(
                "b",
                0,
                0,
                arrival=2.0,
                first_token=4.0,
                finished=6.0,
                prompt_tokens=200,
                output_tokens=4,
            ),
        ],
        end=10.0,
        cpu_s=0.5,
        generated_tokens=14,
        prefill_tokens=360,
        cached_tokens=40,
        engine_preemptions=1,
        priority_preemptions=2,
    )
    m = metrics(result)
    # a: (10 - 0 - 2) / 10 = 0.8 s/token; b: 4 / 4 = 1.0.
    assert (m.latency_mean, m.latency_p50) == pytest.approx((0.9, 0.9))
    assert m.ttft_mean == pytest.approx((1.0 + 0.5 + 2.0) / 3)
    assert m.throughput_programs == pytest.approx(0.2)
    assert m.throughput_tokens == pytest.approx(1.4)
    assert (m.preemptions, m.priority_preemptions) == (3, 2)
    assert m.cached_fraction == pytest.approx(0.1)
    assert m.sim_tokens == 374
    assert m.sim_tokens_per_cpu_s == pytest.approx(748)


def test_rate_at_interpolates_in_log_latency_where_the_curve_first_crosses() -> None:
    rates = [1.0, 2.0, 3.0, 4.0]
    latencies = [1.0, 1.0, 4.0, 1.0]  # noise after the crossing does not count
    at = rate_at(rates, latencies, 2.0)
    assert at is not None
    assert at.bounded
    assert at.rate == pytest.approx(2.5)  # log 2 is halfway between log 1 and log 4
    never = rate_at(rates, [1.0, 1.1, 1.2, 1.3], 2.0)
    assert never is not None
    assert (never.rate, never.bounded) == (4.0, False)
    assert rate_at(rates, [3.0, 4.0, 5.0, 6.0], 2.0) is None
    assert rate_at([1.0, 2.0], [math.nan, 1.0], 2.0) == rate_at([2.0], [1.0], 2.0)


def test_throughput_ratio_at_equal_latency() -> None:
    rates = [1.0, 2.0, 3.0, 4.0]
    baseline = [1.0, 4.0, 16.0, 64.0]  # crosses 2 at 1.5
    policy = [1.0, 1.0, 1.0, 4.0]  # crosses 2 at 3.5
    assert throughput_ratio(rates, policy, baseline, 2.0) == pytest.approx(3.5 / 1.5)
    assert throughput_ratio(rates, policy, [5.0] * 4, 2.0) is None


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
