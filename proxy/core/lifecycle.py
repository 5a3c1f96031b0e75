"""The measurements of one call, applied in the one order the Policy contract documents.

Every mechanism (the process table, the simulator, the vLLM plug-in's book) moves a call through
``waiting -> admitted -> (preempted -> admitted)* -> finished`` with these functions, so that
``call.wait``, ``call.queued_since``, the call's state and, on finish, the program's totals and
the policy's ``on_finish`` happen the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.policies.base import Policy
from proxy.records import Call, CallState, Program

ENDED = (CallState.DONE, CallState.FAILED)
FinishHook = Callable[[Call, Program, float], None]


def policy_hook(policy: Policy) -> FinishHook:
    """``policy.on_finish`` as a plain ``(call, program, now)`` hook."""

    def hook(call: Call, program: Program, now: float) -> None:
        policy.on_finish(call=call, program=program, now=now)

    return hook


def stop_waiting(call: Call, now: float) -> None:
    """Close the call's open waiting stretch, if any, into ``call.wait``."""
    if call.queued_since is not None:
        call.wait += max(0.0, now - call.queued_since)
        call.queued_since = None


def admitted(call: Call, now: float) -> None:
    """The call was handed to an engine (first time or resumed)."""
    stop_waiting(call, now)
    call.state = CallState.RUNNING
    if call.started_at is None:
        call.started_at = now


def preempted(call: Call, now: float) -> None:
    """The call was taken off its engine and waits again from ``now``."""
    call.state = CallState.PREEMPTED
    call.queued_since = now


def requeued(call: Call, now: float, *, preempted_before: bool) -> None:
    """The call (re-)enters a waiting queue; a resumed call keeps the stretch it opened when it
    was preempted."""
    if call.queued_since is None:
        call.queued_since = now
    call.state = CallState.PREEMPTED if preempted_before else CallState.QUEUED


def closed(call: Call, now: float, *, ok: bool) -> None:
    """The call ended: its wait stops and it is DONE (``ok``) or FAILED."""
    stop_waiting(call, now)
    call.state = CallState.DONE if ok else CallState.FAILED
    call.finished_at = now


def finished(on_finish: FinishHook | None, call: Call, program: Program, now: float) -> None:
    """A ``closed`` call leaves its program. Order (the Policy contract): the call leaves
    ``program.active``, its wait is added to ``program.wait`` and ``program.last_completion``
    is set, and only then does the policy's ``on_finish`` see the program."""
    active = program.active
    active.pop(call.id, None)
    if not active:
        # An idle program is kept for idle_ttl_s. A dict emptied by pop keeps its table
        # (184 bytes); a new empty one shares the interpreter's (64 bytes).
        program.active = {}
    program.wait += call.wait
    program.last_completion = now
    if on_finish is not None:
        on_finish(call, program, now)
