"""What the engines were doing while a sweep point was measured: calls running and waiting,
the share of time any call waited, KV use, all time-weighted over engine steps.

Gathered by ``GaugedSimulator``, the discrete-event simulator with one hook at every step end:
a step (or a decode stretch) of ``duration`` seconds adds its engine's state times the part of
it inside the measured span, a few additions per step. An engine with no step in a stretch of
time was idle there and adds nothing (no call running, none waiting). These are the figures
that say why two policies read alike: with no call waiting, every order makes the same
schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.policies.base import Policy
from proxy.sim.engine.engine import StepResult
from proxy.sim.simulator.bookkeeping import EngineSlot
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.results import SimResult
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.workloads import ProgramSpec


class EngineGauges:
    """Time integrals of engine state over ``[start, end]`` (virtual seconds)."""

    def __init__(self, start: float, end: float, engines: int) -> None:
        self.start, self.end, self.engines = start, end, max(1, engines)
        self.running = 0.0
        self.waiting = 0.0
        self.any_waiting = 0.0
        self.kv_use = 0.0
        self.kv_cached = 0.0

    def record(self, engine: EngineSlot, step: StepResult) -> None:
        lo, hi = max(step.start, self.start), min(step.end, self.end)
        if hi <= lo:
            return
        span = hi - lo
        model = engine.model
        # The model's state is already the state at the step's end: the calls that finished
        # in it have left the running list, so they are added back.
        self.running += (model.num_running + len(step.finished)) * span
        waiting = model.num_waiting
        self.waiting += waiting * span
        if waiting:
            self.any_waiting += span
        self.kv_use += model.kv_usage * span
        cache = engine.cache
        if cache is not None and cache.tokens:
            self.kv_cached += cache.tokens / (model.num_blocks * model.block_size) * span

    def means(self) -> dict[str, float]:
        """The ``Metrics`` gauge fields: sums over engines for counts, means for shares."""
        length = self.end - self.start
        if length <= 0:
            return {}
        per_engine = length * self.engines
        return {
            "running_mean": self.running / length,
            "waiting_mean": self.waiting / length,
            "waiting_share": self.any_waiting / per_engine,
            "kv_use": self.kv_use / per_engine,
            "kv_cached": self.kv_cached / per_engine,
        }


class GaugedSimulator(Simulator):
    """The simulator, with ``EngineGauges`` over ``window`` (the measured span) and the count
    of prompt tokens a prefix cache could have served (``SimResult.reusable_tokens``)."""

    def __init__(
        self, config: SimConfig, policy: Policy, window: tuple[float, float] | None
    ) -> None:
        super().__init__(config, policy)
        start, end = window if window is not None else (0.0, math.inf)
        self.gauges = EngineGauges(start, end, config.engines)

    def run(self, programs: Sequence[ProgramSpec]) -> SimResult:
        if not math.isfinite(self.gauges.end):
            self.gauges.end = max((p.arrival for p in programs), default=0.0)
        result = super().run(programs)
        result.gauges = self.gauges.means()
        result.reusable_tokens = sum(
            min(c.prefix_tokens, c.prompt_tokens - 1)
            for p in programs
            for c in p.calls
            if c.prefix_of is not None
        )
        return result

    def _step_end(self, engine: EngineSlot, step: StepResult, now: float) -> None:
        self.gauges.record(engine, step)
        super()._step_end(engine, step, now)


def measured_span(programs: Sequence[ProgramSpec], measured: range) -> tuple[float, float]:
    """From the first measured program's arrival to the last program's arrival: the span in
    which the offered load is steady (as ``results.metrics``'s ``served_share``)."""
    if not programs:
        return 0.0, 0.0
    first = programs[measured.start].arrival if len(measured) else programs[0].arrival
    return first, max(p.arrival for p in programs)
