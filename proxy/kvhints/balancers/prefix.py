"""Prefix-aware routing: a call goes where most of its prompt is already cached."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.kvhints.balancers.autellix import autellix_rule
from proxy.kvhints.balancers.base import Decision, Route, Tuning, least_loaded
from proxy.kvhints.load import EngineLoad


class PrefixAware:
    """The engine holding the longest prefix of the call's prompt (``EngineLoad.cached``,
    from the prefix index), when it holds at least ``min_match_blocks`` more than the
    least-loaded engine and is not loaded past the guard; ties go to the less loaded.
    Otherwise the Autellix rule decides, so programs keep their affinity where the index
    knows nothing yet."""

    name = "prefix-aware"

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        tuning = self.tuning
        lightest = least_loaded(engines)
        best = lightest
        for i, engine in enumerate(engines):
            top = engines[best]
            if engine.cached > top.cached or (
                engine.cached == top.cached and engine.queued < top.queued
            ):
                best = i
        gain = engines[best].cached - engines[lightest].cached
        if gain >= max(tuning.min_match_blocks, 1) and not tuning.overloaded(
            engines[best], engines[lightest]
        ):
            return Decision(best, reason="prefix")
        return autellix_rule(call, engines, tuning)

    def forget(self, *, program: str) -> None:
        pass
