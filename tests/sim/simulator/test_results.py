"""Metrics of a run, and the latency curves and crossings throughput at equal latency reads."""

from __future__ import annotations

import math

import pytest

from proxy.sim.simulator.results import (
    CallResult,
    ProgramResult,
    SimResult,
    bracket,
    metrics,
    percentile,
    rate_at,
    steady_window,
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


def test_the_steady_window_leaves_out_warm_up_and_cool_down() -> None:
    assert steady_window(10, 0.2, 0.2) == range(2, 8)
    assert steady_window(10, 0.0, 0.0) == range(0, 10)
    assert steady_window(1, 0.2, 0.2) == range(0, 1)  # at least one program
    with pytest.raises(ValueError, match="warm-up"):
        steady_window(10, 0.6, 0.5)


def test_metrics_measure_only_the_chosen_programs_and_flag_late_finishers() -> None:
    def prog(pid: str, arrival: float, finished: float) -> ProgramResult:
        return ProgramResult(pid, "x", arrival=arrival, finished=finished, output_tokens=10)

    def call(pid: str, arrival: float, first: float) -> CallResult:
        return CallResult(pid, 0, 0, arrival, first, first + 1, 10, 10)

    result = SimResult(
        programs=[prog("a", 0.0, 1.0), prog("b", 1.0, 3.0), prog("c", 2.0, 12.0),
                  prog("d", 4.0, 5.0)],
        calls=[call("a", 0.0, 0.5), call("b", 1.0, 2.0), call("c", 2.0, 6.0),
               call("d", 4.0, 4.5)],
        end=12.0,
    )  # fmt: skip
    every = metrics(result)
    assert (every.measured, every.programs) == (4, 4)
    assert every.latency_mean == pytest.approx((0.1 + 0.2 + 1.0 + 0.1) / 4)
    window = metrics(result, {"b", "c"})
    assert (window.measured, window.programs, window.calls) == (2, 4, 4)
    assert window.latency_mean == pytest.approx((0.2 + 1.0) / 2)
    assert window.ttft_mean == pytest.approx((1.0 + 4.0) / 2)
    # c finished at 12, after the last arrival (d at 4): half the window ran while draining.
    assert window.late_share == pytest.approx(0.5)
    assert every.late_share == pytest.approx(0.5)
    assert window.throughput_programs == every.throughput_programs  # over the whole run
    # From b's arrival (1) to d's (4): a's call gives 5 of its 10 tokens, b's 10, c's and
    # d's none, against the 30 tokens of b, c and d: the engines served half the offered work.
    assert window.served_share == pytest.approx(15 / 30)
    assert every.served_share == pytest.approx(20 / 40)


def test_bracket_is_where_rate_at_interpolates() -> None:
    rates = [1.0, 2.0, 3.0, 4.0]
    assert bracket(rates, [1.0, 1.5, 4.0, 1.0], 2.0) == (2.0, 3.0)
    assert bracket(rates, [1.0, 1.1, 1.2, 1.3], 2.0) is None  # never crosses
    assert bracket(rates, [3.0, 4.0, 5.0, 6.0], 2.0) is None  # starts above
