"""Synthetic workloads: the paper's means, the shapes of programs, reproducibility."""

from __future__ import annotations

import itertools
import random
import statistics

import pytest

from proxy.sim.simulator.workloads import LengthDist, from_trace, generate, paper_workloads
from proxy.trace import TraceRecord


@pytest.mark.parametrize(
    ("mean", "sigma", "high"), [(6.66, 1.0, 80), (276.81, 1.0, 2048), (3.0, 0.0, 10)]
)
def test_length_dist_hits_its_mean_after_clipping(mean: float, sigma: float, high: int) -> None:
    dist = LengthDist(mean, sigma, high=high)
    if sigma:
        assert dist.clipped_mean(dist.mu) == pytest.approx(mean, rel=1e-6)
    rng = random.Random(0)
    samples = [dist.sample(rng) for _ in range(40_000)]
    assert min(samples) >= 1
    assert max(samples) <= high
    assert statistics.fmean(samples) == pytest.approx(mean, rel=0.03)


def test_length_dist_refuses_an_impossible_mean() -> None:
    with pytest.raises(ValueError, match="mean"):
        LengthDist(100.0, 1.0, high=50)


def _stats(name: str, n: int, fresh: bool = True) -> tuple[float, float, float, int]:
    programs = generate(name, rate=1.0, programs=n, seed=0, fresh=fresh)
    calls = [c for p in programs for c in p.calls]
    return (
        len(calls) / n,
        statistics.fmean(c.prompt_tokens for c in calls),
        statistics.fmean(c.output_tokens for c in calls),
        max(len(p.calls) for p in programs),
    )


@pytest.mark.parametrize(
    ("name", "n", "calls", "prefill", "decode", "most"),
    [
        ("chatbot", 3000, 6.66, 255.65, 276.81, 80),
        ("react", 2000, 10.75, 735.06, 34.14, 70),
        ("lats", 150, 159.71, 467.24, 72.64, 400),
    ],
)
def test_paper_means_per_call(
    name: str, n: int, calls: float, prefill: float, decode: float, most: int
) -> None:
    # With fresh prompts a call's prompt is its new tokens: the paper's per-call means.
    got_calls, got_prefill, got_decode, got_most = _stats(name, n)
    assert got_calls == pytest.approx(calls, rel=0.08)
    assert got_prefill == pytest.approx(prefill, rel=0.06)
    assert got_decode == pytest.approx(decode, rel=0.06)
    assert got_most <= most


def test_resent_conversations_grow_turn_by_turn() -> None:
    spec = paper_workloads()["chatbot"]
    for program in generate("chatbot", rate=1.0, programs=50, seed=2):
        for prev, call in zip(program.calls, program.calls[1:], strict=False):
            context = prev.prompt_tokens + prev.output_tokens
            assert call.parents == (prev.index,)
            if call.prefix_of is None:  # cut to the context window
                assert call.prompt_tokens + call.output_tokens <= spec.max_context
            else:
                assert call.prefix_of == prev.index
                assert call.prefix_tokens == context
                assert call.prompt_tokens > context


def test_lats_programs_fan_out_and_join() -> None:
    (program,) = generate("lats", rate=1.0, programs=1, seed=3)
    calls = program.calls
    assert len(calls) % 10 == 0
    expansions = calls[:5]
    assert all(c.parents == () for c in expansions)  # the first round starts at the root
    assert [c.parents for c in calls[5:10]] == [(i,) for i in range(5)]  # each evaluation
    assert all(c.parents == (5, 6, 7, 8, 9) for c in calls[10:15])  # the next round joins
    assert all(p < c.index for c in calls for p in c.parents)
    assert all(c.prefix_of in (None, *range(c.index)) for c in calls)


def test_same_seed_same_programs_and_rates_only_move_arrivals() -> None:
    a = generate("mixed", rate=1.0, programs=30, seed=5)
    assert a == generate("mixed", rate=1.0, programs=30, seed=5)
    assert a != generate("mixed", rate=1.0, programs=30, seed=6)
    b = generate("mixed", rate=2.0, programs=30, seed=5)
    assert [p.calls for p in a] == [p.calls for p in b]
    assert [p.arrival / 2 for p in a] == pytest.approx([p.arrival for p in b])
    kinds = [p.kind for p in a]
    assert {k: kinds.count(k) for k in set(kinds)} == {"chatbot": 10, "react": 10, "lats": 10}


def test_arrivals_are_poisson() -> None:
    programs = generate("chatbot", rate=4.0, programs=5000, seed=1)
    gaps = [b.arrival - a.arrival for a, b in itertools.pairwise(programs)]
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.05)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)


def test_unknown_workload_and_bad_rate() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        generate("nope", rate=1.0, programs=1)
    with pytest.raises(ValueError, match="rate"):
        generate("chatbot", rate=0.0, programs=1)


def test_from_trace_rebuilds_dependencies_and_tool_times() -> None:
    records = [
        TraceRecord("p", "c1", 10.0, 12.0, 100, 20),
        TraceRecord("p", "c2", 13.0, 14.0, 150, 10),  # no parents: the previous call
        TraceRecord("p", "c3", 14.5, 15.0, 40, 5, parents=("c1",)),  # a fresh prompt
        TraceRecord("q", "d1", 11.0, 12.0, 30, 3),
    ]
    p, q = from_trace(records)
    assert (p.id, p.arrival, q.id, q.arrival) == ("p", 0.0, "q", 1.0)
    _c1, c2, c3 = p.calls
    assert (c2.parents, c2.think_s, c2.prefix_of, c2.prefix_tokens) == ((0,), 1.0, 0, 120)
    assert (c3.parents, c3.think_s, c3.prefix_of) == ((0,), 2.5, None)
    assert from_trace([]) == []
