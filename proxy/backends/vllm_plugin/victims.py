"""The plug-in's preemption rule: which running vLLM requests give their place to waiting
ones, by the scheduling core's ``PreemptRule`` and ``plan`` (slots only: vLLM's own scheduler
handles KV pressure)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from proxy.backends.vllm_plugin.queue import SortKey
from proxy.core.preempt import PreemptRule, plan
from proxy.policies.base import Priority

_LEVEL_RULE = PreemptRule()  # margin 1: only a better level preempts; quanta are counted in tokens


def choose_victims(
    *,
    waiting: Iterable[str],
    running: Sequence[str],
    keys: Mapping[str, SortKey],
    free_slots: int,
    passed_over: Collection[str],
    preemptible: Collection[str],
    rule: PreemptRule = _LEVEL_RULE,
) -> list[tuple[str, str]]:
    """Which running calls to preempt, and for whom: ``(victim, beneficiary)`` pairs, by the
    core's rule and ``plan``.

    ``waiting`` is best first; ``keys`` ranks both lists. A waiting call claims a free slot if
    there is one and it has not been passed over yet (its first chance to be admitted the
    ordinary way); otherwise it takes the place of the worst ``preemptible`` running call (one
    that had its minimum quantum since its last admission) if the rule says it outranks it.
    """
    candidates = sorted((r for r in running if r in preemptible), key=lambda r: keys[r])
    room = {"free": free_slots, "credit": 0}

    def fits(w: str) -> bool:
        return room["credit"] > 0 or (room["free"] > 0 and w not in passed_over)

    def take(w: str) -> None:
        if room["credit"] > 0:
            room["credit"] -= 1
        else:
            room["free"] -= 1

    def free(victim: str) -> None:
        room["credit"] += 1

    def outranks(w: str, r: str) -> bool:
        return rule.outranks(_priority(keys[w]), _priority(keys[r]))

    return plan(waiting, candidates, outranks=outranks, fits=fits, take=take, free=free)


def _priority(key: SortKey) -> Priority:
    return Priority(key[0], key[1], key[2])
