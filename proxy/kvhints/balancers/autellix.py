"""The paper's balancer (Autellix, section 4.3): short calls spread, long calls stay with
their program's KV cache."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.kvhints.balancers.base import Decision, Route, Tuning, find, least_loaded
from proxy.kvhints.load import EngineLoad


def autellix_rule(call: Route, engines: Sequence[EngineLoad], tuning: Tuning) -> Decision:
    """A call of at most ``tuning.threshold`` prompt tokens goes to the least-loaded engine:
    a short prompt is cheap to prefill anywhere, and its shared system prompt is cached almost
    everywhere. A longer one goes to its program's engine, which holds the program's earlier
    context, unless that engine cannot take it or is loaded past the guard; then it moves to
    the least-loaded engine (and that becomes the program's engine when the call starts)."""
    lightest = least_loaded(engines)
    if call.prompt_tokens <= tuning.threshold:
        return Decision(lightest, reason="short")
    if call.affinity is None:
        return Decision(lightest, reason="new")
    index = find(engines, call.affinity)
    if index is None:
        return Decision(lightest, moved_from=call.affinity, reason="unavailable")
    if index != lightest and tuning.overloaded(engines[index], engines[lightest]):
        return Decision(lightest, moved_from=call.affinity, reason="overloaded")
    return Decision(index, reason="affinity")


class AutellixBalancer:
    """The program's engine is kept in the process table (``Program.engine``), so it expires
    with the program and nothing is remembered here."""

    name = "autellix"

    def __init__(self, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        return autellix_rule(call, engines, self.tuning)

    def forget(self, *, program: str) -> None:
        pass
