"""The preemption rule: when a running call gives its place to a waiting one, and which.

A waiting call takes the place of the worst-ranked running call that has had its minimum
quantum since its last admission, if it ranks at least ``margin`` levels better (``margin`` 0:
any better priority at all). Within a level calls run FCFS, so preempting for a small
difference, the thrashing that discretizing into levels avoids, never happens with margin >= 1;
and since every admission makes at least its quantum of progress, preemption cannot livelock.

The rule is the same for the live gate (slots), the simulated engine (slots and KV blocks) and
the vLLM plug-in (slots): ``plan`` walks waiting calls best first and gives each the room it
needs, from free room first, then from victims, as long as the rule allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from proxy.policies.base import Priority

W = TypeVar("W")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PreemptRule:
    """``preempt``: preempt running calls for waiting ones that outrank them (False leaves
    priority to the waiting queue alone, as vLLM's own priority policy does).
    ``margin``: levels by which the waiting call must outrank the running one; 0 compares whole
    priorities (then LAS and SRPT are preemptive, and LAS thrashes).
    ``min_quantum_s``: least time a call runs after each admission before it can be preempted
    for priority (each preemption costs the engine a re-prefill; this bounds the waste)."""

    preempt: bool = True
    margin: int = 1
    min_quantum_s: float = 0.5

    def __post_init__(self) -> None:
        if self.margin < 0 or self.min_quantum_s < 0:
            raise ValueError("margin and min_quantum_s must not be negative")

    def outranks(self, waiting: Priority, running: Priority) -> bool:
        """Does a call ranked ``waiting`` deserve the place of one ranked ``running``?"""
        if self.margin == 0:
            return waiting < running
        return running.level - waiting.level >= self.margin

    def ready(self, admitted_at: float | None, now: float) -> bool:
        """Has a running call admitted at ``admitted_at`` had its minimum quantum by ``now``?"""
        return admitted_at is not None and now - admitted_at >= self.min_quantum_s


def plan(
    waiting: Iterable[W],
    candidates: Sequence[R],
    *,
    outranks: Callable[[W, R], bool],
    fits: Callable[[W], bool],
    take: Callable[[W], None],
    free: Callable[[R], None],
) -> list[tuple[R, W]]:
    """Victims for the waiting calls, as ``(victim, beneficiary)`` pairs.

    ``waiting`` is best first; ``candidates`` are the preemptible running calls (quantum had),
    best first. Each waiting call that does not ``fit`` in the room left takes the worst
    candidate's room (``free``) while it ``outranks`` it; it then ``take``s its room. The walk
    stops at the first call that neither fits nor outranks the worst candidate: the calls after
    it rank no better."""
    left = list(candidates)
    out: list[tuple[R, W]] = []
    for w in waiting:
        while not fits(w):
            if not left or not outranks(w, left[-1]):
                return out
            victim = left.pop()
            free(victim)
            out.append((victim, w))
        take(w)
    return out
