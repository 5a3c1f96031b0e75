"""Process-table records: one `Program` per agent run, one `Call` per LLM request.

These are the shapes that the process table keeps, that policies read and update, and that the
simulator and the engine-side scheduler plug-ins build for themselves. They are plain
``slots`` dataclasses with no behaviour beyond trivial derived values, so that every layer can
construct them in tests with keyword defaults.

Units: times are seconds on whatever clock the caller injects (wall clock in the proxy,
virtual time in the simulator). *Service* is measured in the unit the process table is
configured with (by default, estimated engine execution seconds; see ``docs/identification.md``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CallState(enum.Enum):
    """Where a call is in its life."""

    QUEUED = "queued"  # admitted by the proxy, waiting for an engine slot
    RUNNING = "running"  # submitted to an engine, tokens may be streaming
    PREEMPTED = "preempted"  # aborted at the engine by the proxy, waiting to resume
    DONE = "done"
    FAILED = "failed"


@dataclass(slots=True)
class Call:
    """One LLM request (a *thread* of its program while it is active)."""

    id: str
    program_id: str
    arrival: float
    thread: str = ""
    parents: tuple[str, ...] = ()
    prompt_tokens: int = 0  # estimated on arrival, replaced by the engine's usage
    completion_tokens: int = 0  # generated so far
    engine: str | None = None
    state: CallState = CallState.QUEUED
    # Program service (PLAS) or critical path (ATLAS) seen when the call arrived: the call's
    # starting priority, and the base its own service is added to when it finishes.
    start_service: float = 0.0
    service: float = 0.0  # this call's own attained service so far
    wait: float = 0.0  # accumulated time queued (proxy or engine), excluding running
    queued_since: float | None = None  # when the current wait began, if waiting now
    started_at: float | None = None  # first time it was sent to an engine
    finished_at: float | None = None
    level: int = 0  # multi-level queue level last assigned by the policy
    # True remaining work, known only to the simulator (for the clairvoyant SRPT yardstick).
    oracle_remaining: float | None = None


@dataclass(slots=True)
class Program:
    """One agent run: the unit Autellix schedules by."""

    id: str
    created: float
    tenant: str = ""
    identified_by: str = "new"  # which identification source named it (a metrics label)
    service: float = 0.0  # attained service of completed calls (PLAS)
    critical_path: float = 0.0  # longest critical path observed so far (ATLAS)
    wait: float = 0.0  # accumulated waiting time of its completed calls
    active: dict[str, Call] = field(default_factory=dict)  # call id -> active call
    engine: str | None = None  # engine holding its KV cache (load-balancer affinity)
    last_arrival: float = 0.0
    last_completion: float | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ending: bool = False  # the client said this program's current call is its last
