"""What a simulation produced, and the paper's metrics computed from it.

The headline metric is the paper's *program-level token latency*: a program's response time
divided by the tokens it generated. Response time runs from the program's arrival to its last
call's finish, less the tool (think) time on its critical path, so that it measures what the
serving system adds; for a program with parallel calls that is the critical-path response time
(the last call to finish closes the longest path), over all the tokens it generated.

Throughput at equal latency (the paper's Fig. 12 comparison): each policy's latency-against-
arrival-rate curve is interpolated at a latency target, and the arrival rates reached there are
compared. ``rate_at`` walks a curve up from its lowest rate and interpolates (linearly in log
latency) where it first crosses the target; ``summary.ratios`` does it for every workload and
policy of a sweep's rows, with the target a multiple of fcfs's latency at the lowest rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CallResult:
    program: str
    index: int
    engine: int
    arrival: float
    first_token: float
    finished: float
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    preemptions: int = 0
    wait: float = 0.0

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival


@dataclass(frozen=True, slots=True)
class ProgramResult:
    id: str
    kind: str
    arrival: float
    finished: float
    output_tokens: int
    tool_s: float = 0.0
    """Tool / think time on the critical path (not the serving system's doing)."""
    calls: int = 0

    @property
    def response_s(self) -> float:
        return max(0.0, self.finished - self.arrival - self.tool_s)

    @property
    def token_latency(self) -> float:
        return self.response_s / max(1, self.output_tokens)


@dataclass(slots=True)
class SimResult:
    """Raw output of one run (``des.Simulator.run``)."""

    programs: list[ProgramResult] = field(default_factory=list)
    calls: list[CallResult] = field(default_factory=list)
    end: float = 0.0
    cpu_s: float = 0.0
    steps: int = 0
    generated_tokens: int = 0
    prefill_tokens: int = 0
    """Prompt tokens actually computed (cache hits skipped, recomputation counted)."""
    cached_tokens: int = 0
    engine_preemptions: int = 0
    """Preemptions by the engine when its KV ran out."""
    priority_preemptions: int = 0
    """Preemptions by the policy queue for better waiting calls."""
    swapped_tokens: int = 0
    """KV tokens copied to host memory by those preemptions (the rest recomputed)."""
    window_area: float = 0.0
    """Integral of the number of programs in the system over ``SimConfig.window``."""
    gauges: Mapping[str, float] = field(default_factory=dict)
    """Time-weighted engine state over the measured span (``gauges.EngineGauges``), when the
    run was gauged."""
    reusable_tokens: int = 0
    """Prompt tokens that continue a context an earlier call left (prefix-cache hits at most)."""

    @property
    def sim_tokens(self) -> int:
        """Tokens the engines processed: prompt tokens computed plus tokens generated."""
        return self.generated_tokens + self.prefill_tokens


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (as
    numpy's default); NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@dataclass(frozen=True, slots=True)
class Metrics:
    """The figures one sweep point reports (seconds, tokens, per second of virtual time)."""

    programs: int
    calls: int
    latency_mean: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    ttft_mean: float
    ttft_p50: float
    ttft_p99: float
    throughput_programs: float
    """Programs finished per second, over the time from the first arrival to the last finish."""
    throughput_tokens: float
    """Tokens generated per second, over the same span."""
    preemptions: int
    priority_preemptions: int
    cached_fraction: float
    """Share of the prompt tokens served from the prefix cache."""
    makespan: float
    sim_tokens: int
    generated_tokens: int
    cpu_s: float
    measured: int = 0
    """Programs the latency and TTFT figures are over (the steady-state window: see
    ``metrics``)."""
    late_share: float = 0.0
    """Share of the measured programs that finished after the last program of the run arrived,
    i.e. while the engines drained rather than under the offered load."""
    served_share: float = 1.0
    """Tokens generated from the first measured program's arrival to the last program's
    arrival, over the output tokens of the programs arriving in that span: about 1 in a steady
    state, capacity / offered load past saturation (work piles up whatever the order).
    ``rate_at`` counts a point under ``STEADY_SERVED`` as over any latency target."""

    running_mean: float = math.nan
    """Calls running on the engines, time-weighted mean over the measured span (summed over
    engines); with ``waiting_mean``, ``waiting_share``, ``kv_use`` and ``kv_cached`` from
    ``gauges.EngineGauges``. NaN when the run was not gauged."""
    waiting_mean: float = math.nan
    """Calls queued at the engines (not running), time-weighted mean."""
    waiting_share: float = math.nan
    """Share of the measured span during which any call waited."""
    kv_use: float = math.nan
    """KV blocks held by running calls, share of capacity, time-weighted mean."""
    kv_cached: float = math.nan
    """KV blocks held by the prefix cache for finished calls, share of capacity."""
    prefix_hit_share: float = math.nan
    """Prompt tokens served from the prefix cache over the tokens that could have been (those
    continuing an earlier call's context); NaN when no call continues one."""
    kv_preemptions: int = 0
    """Preemptions by the engine when its KV ran out (``priority_preemptions``: by the policy)."""

    @property
    def sim_tokens_per_cpu_s(self) -> float:
        return self.sim_tokens / self.cpu_s if self.cpu_s > 0 else math.inf


def metrics(result: SimResult, measured: Collection[str] | None = None) -> Metrics:
    """The figures of a run. ``measured``: the ids of the programs the latency and TTFT figures
    are over (default: all), e.g. the steady-state window of a sweep point (``steady_window``);
    counts, throughput, preemptions and the cache share are over the whole run."""
    last_arrival = max((p.arrival for p in result.programs), default=0.0)
    chosen = [p for p in result.programs if measured is None or p.id in measured]
    ids = {p.id for p in chosen}
    latencies = [p.token_latency for p in chosen]
    ttfts = [c.ttft for c in result.calls if c.program in ids]
    late = sum(1 for p in chosen if p.finished > last_arrival)
    served = _served_share(result, min((p.arrival for p in chosen), default=0.0), last_arrival)
    start = min((p.arrival for p in result.programs), default=0.0)
    span = max(result.end - start, 1e-12)
    prompt = sum(c.prompt_tokens for c in result.calls)
    return Metrics(
        programs=len(result.programs),
        calls=len(result.calls),
        latency_mean=_mean(latencies),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_p99=percentile(latencies, 99),
        ttft_mean=_mean(ttfts),
        ttft_p50=percentile(ttfts, 50),
        ttft_p99=percentile(ttfts, 99),
        throughput_programs=len(result.programs) / span,
        throughput_tokens=sum(p.output_tokens for p in result.programs) / span,
        preemptions=result.engine_preemptions + result.priority_preemptions,
        priority_preemptions=result.priority_preemptions,
        cached_fraction=result.cached_tokens / prompt if prompt else 0.0,
        makespan=span,
        sim_tokens=result.sim_tokens,
        generated_tokens=result.generated_tokens,
        cpu_s=result.cpu_s,
        measured=len(chosen),
        late_share=late / len(chosen) if chosen else 0.0,
        served_share=served,
        **_gauges(result),
    )


def _gauges(result: SimResult) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(v) for k, v in result.gauges.items()}
    out["kv_preemptions"] = result.engine_preemptions
    if result.reusable_tokens > 0:
        out["prefix_hit_share"] = min(1.0, result.cached_tokens / result.reusable_tokens)
    return out


STEADY_SERVED = 0.9
"""A point whose ``served_share`` is below this is not a steady state: the engines fell behind
the arrivals, so its finite run's latency understates the latency at that rate."""


def _served_share(result: SimResult, start: float, end: float) -> float:
    offered = sum(p.output_tokens for p in result.programs if start <= p.arrival <= end)
    if end <= start or offered <= 0:
        return 1.0
    generated = 0.0
    for c in result.calls:
        lo, hi = max(c.first_token, start), min(c.finished, end)
        if c.finished <= c.first_token:
            generated += c.output_tokens if start <= c.finished <= end else 0
        elif hi > lo:
            generated += c.output_tokens * (hi - lo) / (c.finished - c.first_token)
    return generated / offered


def steady_window(programs: int, warmup: float, cooldown: float) -> range:
    """Indices (in arrival order) of the programs a point measures: all but the first
    ``warmup`` share (they meet an empty system) and the last ``cooldown`` share (the ones that
    arrive while the stream ends; they keep the engines loaded while the measured programs
    finish, and are simulated but not measured). At least one program is measured."""
    if not (0 <= warmup < 1 and 0 <= cooldown < 1 and warmup + cooldown < 1):
        raise ValueError("warm-up and cool-down shares must be in [0, 1) and sum below 1")
    lo = math.floor(programs * warmup)
    hi = programs - math.floor(programs * cooldown)
    if hi <= lo:
        lo, hi = max(0, min(lo, programs - 1)), max(1, min(lo, programs - 1) + 1)
        hi = min(hi, programs)
    return range(lo, hi)


@dataclass(frozen=True, slots=True)
class RateAt:
    """The arrival rate a curve reaches at a latency target. ``bounded`` is False when the
    curve never crossed the target within the swept rates: ``rate`` is then the highest rate
    swept, a lower bound."""

    rate: float
    bounded: bool


def rate_at(rates: Sequence[float], latencies: Sequence[float], target: float) -> RateAt | None:
    """Where the curve (rates ascending) first crosses ``target``; None if it starts above it."""
    points = [(r, v) for r, v in zip(rates, latencies, strict=True) if not math.isnan(v)]
    if not points or points[0][1] > target:
        return None
    for (r0, v0), (r1, v1) in itertools.pairwise(points):
        if v1 > target:
            # Latency grows roughly exponentially with load near saturation: interpolate in log;
            # an unsteady point (infinite) gives the last steady rate.
            f = (
                (math.log(target) - math.log(v0)) / (math.log(v1) - math.log(v0))
                if v0 > 0 and math.isfinite(v1)
                else 0.0
            )
            return RateAt(r0 + f * (r1 - r0), True)
    return RateAt(points[-1][0], False)


def bracket(
    rates: Sequence[float], latencies: Sequence[float], target: float
) -> tuple[float, float] | None:
    """The two swept rates around the curve's first crossing of ``target`` (the last rate at
    or under it, the next over it), where ``rate_at`` interpolates; None when the curve starts
    above the target or never crosses it."""
    points = [(r, v) for r, v in zip(rates, latencies, strict=True) if not math.isnan(v)]
    if not points or points[0][1] > target:
        return None
    for (r0, _), (r1, v1) in itertools.pairwise(points):
        if v1 > target:
            return r0, r1
    return None


def throughput_ratio(
    rates: Sequence[float],
    policy: Sequence[float],
    baseline: Sequence[float],
    target: float,
) -> float | None:
    """Rate the policy sustains at ``target`` over the rate the baseline sustains there. None
    when either curve starts above the target (no rate meets it)."""
    ours, theirs = rate_at(rates, policy, target), rate_at(rates, baseline, target)
    if ours is None or theirs is None or theirs.rate <= 0:
        return None
    return ours.rate / theirs.rate


def curve(
    rows: Sequence[Mapping[str, Any]],
    workload: str,
    policy: str,
    column: str,
    *,
    steady: bool = True,
) -> tuple[list[float], list[float]]:
    """A policy's (rates, latencies), rates ascending. ``steady``: a point whose
    ``served_share`` is under ``STEADY_SERVED`` reads infinite (over any target)."""
    points = sorted(
        (
            float(r["rate"]),
            math.inf
            if steady and float(r.get("served_share", 1.0)) < STEADY_SERVED
            else float(r[column]),
        )
        for r in rows
        if r["workload"] == workload and r["policy"] == policy
    )
    return [p[0] for p in points], [p[1] for p in points]


def latency_target(
    rows: Sequence[Mapping[str, Any]],
    workload: str,
    column: str,
    factor: float,
    baseline: str = "fcfs",
) -> float:
    """``factor`` x the baseline curve's latency at its lowest rate. Without an fcfs curve, the
    lowest point of any policy at the lowest rate; without another baseline's curve, NaN."""
    _, values = curve(rows, workload, baseline, column, steady=False)
    if not values and baseline == "fcfs":
        lowest = min(float(r["rate"]) for r in rows if r["workload"] == workload)
        values = [
            float(r[column])
            for r in rows
            if r["workload"] == workload and float(r["rate"]) == lowest
        ]
    return factor * min(values[:1] or [math.nan])
