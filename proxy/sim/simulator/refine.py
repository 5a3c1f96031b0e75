"""The sweep's second pass: more rates where each curve crosses a latency target.

With several seeds a curve is read as the median over its seeds at each rate
(``seeds.median_rows``), and every rate it adds is run for each of the curve's seeds, so that
each seed's own curve has the same rates to be read at.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from proxy.sim.simulator.results import bracket, curve
from proxy.sim.simulator.seeds import median_rows
from proxy.sim.simulator.summary import targets_of


class _Point(Protocol):
    """What refining reads of a sweep point (``sweep.Point``, a dataclass)."""

    @property
    def case(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def rate(self) -> float: ...
    @property
    def load(self) -> float: ...


Point = TypeVar("Point", bound=_Point)

EXTEND = 1.5
"""A curve that never crossed the target on the grid gets one more point at this times its
highest rate (and one at its square), once."""


def refine(
    points: Sequence[Point],
    rows: Sequence[Mapping[str, Any]],
    factor: float,
    count: int,
    columns: Sequence[str] = ("latency_mean", "latency_p99"),
) -> list[Point]:
    """``count`` rates spaced evenly in log rate strictly inside the bracket where each curve
    (case x policy, median over seeds) first crosses each target (``factor`` x fcfs's latency
    at the lowest rate, and for the mean x vLLM 0.6's when that curve was swept, as
    ``summary.ratios`` reads them), once with the points the engines fell behind on counted as
    over the target (steady) and once as measured (finite run); for fcfs that bracket is its
    knee. A curve that stayed steady and under the target on the whole grid gets the rates
    EXTEND and EXTEND**2 times its highest swept rate instead. Rates already swept are not
    repeated; each new point copies its curve's settings, once per seed."""
    if count <= 0:
        return []
    medians = median_rows(rows)
    templates: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        same = templates.setdefault((point.case, point.policy), [])
        if point.seed not in {p.seed for p in same}:
            same.append(point)
    out: list[Point] = []
    for (case, policy), seeds in templates.items():
        template = seeds[0]
        base = template.rate / template.load if template.load else 1.0
        wanted: set[float] = set()
        targets = {
            key: value
            for key, value in targets_of(medians, case, factor).items()
            if key[0] in columns
        }
        for ((column, _), target), steady in itertools.product(targets.items(), (True, False)):
            rates, values = curve(medians, case, policy, column, steady=steady)
            if not rates or not math.isfinite(target):
                continue
            around = bracket(rates, values, target)
            if around is not None:
                lo, hi = around
                step = (hi / lo) ** (1.0 / (count + 1))
                wanted.update(lo * step**k for k in range(1, count + 1))
            elif steady and all(v <= target for v in values):
                wanted.update(rates[-1] * EXTEND**k for k in (1, 2))
        swept = {round(p.rate, 6) for p in points if (p.case, p.policy) == (case, policy)}
        for rate in sorted({round(r, 6) for r in wanted} - swept):
            for seeded in seeds:
                out.append(dataclasses.replace(seeded, rate=rate, load=round(rate / base, 4)))  # type: ignore[type-var]
    return out
