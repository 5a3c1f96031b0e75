"""Multi-level queues shared by the policies that discretize service (MLFQ, PLAS, ATLAS).

K levels; level i holds service in ``[lo_i, hi_i)`` with ``lo_0 = 0``, ``hi_i = first *
growth**i`` and ``hi_{K-1} = inf``. A call is demoted when it uses up its level's quantum simply
because its service crosses the next boundary: the level is a function of a service value, so
the policies stay stateless apart from anti-starvation.

Why discretize at all (AUTELLIX.md): continuous least-attained-service priorities degrade into
round-robin among similar calls and preempt for nothing; a few geometric levels keep calls of
similar age together (FCFS among them) and bound each call's preemptions by the number of levels.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

from proxy.policies.base import live_wait
from proxy.records import Call

# Defaults, in estimated engine seconds (see docs/policies.md for the reasoning).
DEFAULT_LEVELS = 8
DEFAULT_FIRST = 0.5
DEFAULT_GROWTH = 2.0
DEFAULT_BETA = 8.0


@dataclass(frozen=True, slots=True)
class LevelsConfig:
    """Settings of the multi-level queues and of anti-starvation.

    levels: K, the number of queues (1 means a single FCFS queue).
    first: upper boundary of the top queue, in service units (estimated engine seconds by
        default); it is also the top queue's quantum.
    growth: factor between consecutive boundaries (> 1).
    beta: anti-starvation threshold: a call whose W / T reaches beta jumps to the top queue
        (W: program wait + call wait, T: program service + call service; both in seconds when
        service is measured in seconds). None turns anti-starvation off.
    """

    levels: int = DEFAULT_LEVELS
    first: float = DEFAULT_FIRST
    growth: float = DEFAULT_GROWTH
    beta: float | None = DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.levels < 1:
            raise ValueError("levels must be at least 1")
        if not (self.first > 0 and math.isfinite(self.first)):
            raise ValueError("first must be a positive finite number")
        if not (self.growth > 1 and math.isfinite(self.growth)):
            raise ValueError("growth must be a finite number above 1")
        if self.beta is not None and not (self.beta > 0):
            raise ValueError("beta must be positive (or null to turn anti-starvation off)")


class Levels:
    """The K queues' boundaries; maps a service value to its level."""

    __slots__ = ("bounds",)

    def __init__(self, *, levels: int, first: float, growth: float) -> None:
        # Upper boundaries of levels 0..K-2; the last level is unbounded.
        self.bounds: tuple[float, ...] = tuple(first * growth**i for i in range(levels - 1))

    @classmethod
    def from_config(cls, config: LevelsConfig) -> Levels:
        return cls(levels=config.levels, first=config.first, growth=config.growth)

    @property
    def count(self) -> int:
        return len(self.bounds) + 1

    def level_of(self, service: float) -> int:
        """The level whose range holds ``service`` (a boundary value belongs to the level below
        it: a call that has used exactly its quantum is demoted)."""
        return bisect_right(self.bounds, service)

    def lower(self, level: int) -> float:
        return 0.0 if level == 0 else self.bounds[level - 1]

    def upper(self, level: int) -> float:
        return self.bounds[level] if level < len(self.bounds) else math.inf

    def quantum(self, level: int) -> float:
        """Service a call may use in ``level`` before it drops to the next one."""
        return self.upper(level) - self.lower(level)

    def until_demotion(self, service: float) -> float:
        """Service left before ``service`` crosses its level's upper boundary (inf at the
        bottom): a mechanism can use it to know when to report usage next."""
        return self.upper(self.level_of(service)) - service


@dataclass(slots=True)
class _Promotion:
    wait: float  # the call's live wait when it was last promoted
    service: float  # the call's service when it was last promoted


class StarvationGuard:
    """Anti-starvation (PLAS, ATLAS, optionally MLFQ): when ``W / T >= beta`` a call moves to the
    top queue, and only the call's own W and T reset.

    The reset must not touch the call's true service (the program's accounting needs it) nor
    the mechanism's wait measurements, so the guard keeps a per-call baseline instead: the call's
    wait and service at its last promotion. Only promoted calls have one, and ``forget`` drops it
    when the call finishes, so the guard holds at most one small entry per starving call.
    """

    __slots__ = ("_marks", "beta")

    def __init__(self, beta: float | None) -> None:
        self.beta = beta
        self._marks: dict[str, _Promotion] = {}

    def service_since_promotion(
        self, call: Call, *, program_wait: float, program_service: float, now: float
    ) -> float | None:
        """Promote the call first if it is starving now; then, if it was ever promoted, the
        service it has had since its last promotion (its level counts from the top queue
        again), else None (its level is the policy's usual one)."""
        if self.beta is None:
            return None
        wait = live_wait(call, now)
        mark = self._marks.get(call.id)
        base_wait, base_service = (mark.wait, mark.service) if mark else (0.0, 0.0)
        w = program_wait + wait - base_wait
        t = program_service + call.service - base_service
        # T = 0 (nothing served by the program or the call) never promotes: such a call ranks
        # by a zero service already, and a mark for it would only cost memory.
        # A promoted call that has not been served since sits at the top already: promoting it
        # again would only move its wait baseline, so the result would depend on how often the
        # mechanism asks. Its mark stays until it is served.
        unserved = mark is not None and call.service == mark.service
        if t > 0 and w >= self.beta * t and not unserved:
            mark = self._marks[call.id] = _Promotion(wait, call.service)
        return None if mark is None else call.service - mark.service

    def settled(self, call: Call) -> bool:
        """Can the call's rank not change by waiting? True if anti-starvation is off, the call
        is not waiting, or it was promoted and not served since (a new promotion would change
        nothing). Cheap: a policy asks it before computing a deadline's inputs."""
        if self.beta is None or call.queued_since is None:
            return True
        mark = self._marks.get(call.id)
        return mark is not None and call.service == mark.service

    def deadline(
        self, call: Call, *, program_wait: float, program_service: float, now: float
    ) -> float:
        """When a waiting call's rank changes by itself: the time its W / T reaches beta
        (``program_wait`` and ``program_service`` as in ``service_since_promotion``, both
        constant until the program's records change, which the mechanism reports). inf for a
        call that is not waiting, that cannot starve, or that sits at the top already."""
        beta = self.beta
        if beta is None or self.settled(call):
            return math.inf
        mark = self._marks.get(call.id)
        base_wait, base_service = (mark.wait, mark.service) if mark else (0.0, 0.0)
        t = program_service + call.service - base_service
        if t <= 0:
            return math.inf
        w = program_wait + live_wait(call, now) - base_wait
        return now + (beta * t - w)

    def since_promotion(self, call: Call) -> float | None:
        """What ``service_since_promotion`` last answered for the call, without promoting it."""
        mark = self._marks.get(call.id)
        return None if mark is None else call.service - mark.service

    def promoted(self, call_id: str) -> bool:
        return call_id in self._marks

    def forget(self, call_id: str) -> None:
        self._marks.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._marks)
