"""The Policy contract: how a scheduling policy ranks calls, and the `Priority` it ranks them by.

A policy is pure and synchronous (DESIGN.md, rule 1): it never awaits, never reads a clock and
never does I/O. Time comes in as ``now``; everything else it needs comes in as the call and its
program's process-table records, which it reads and, at the points the contract names, updates.
The same policy object therefore runs unchanged in the live proxy, in the simulator and inside
the engine-side scheduler plug-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol, runtime_checkable

from proxy.records import Call, Program


class Priority(NamedTuple):
    """Where a call stands in the queue: smaller is served sooner.

    An immutable tuple (a NamedTuple rather than a frozen dataclass: the simulator builds one
    per queued call per re-ranking, and a tuple is built in half the time), ordered field by
    field: first the queue ``level`` (0 is the top queue), then ``key`` inside
    the level (FCFS inside a level: the call's arrival, or for policies that rank whole programs,
    the program's order), then ``group``, which keeps calls with the same level and key together
    (ATLAS puts the program id there so a program's parallel calls stay adjacent). Calls with
    equal priorities are served in arrival order by the scheduler.
    """

    level: int
    key: float = 0.0
    group: str = ""


@runtime_checkable
class Policy(Protocol):
    """A scheduling policy. Built-ins live in ``proxy.policies``; plug-ins are found by the
    registry (``proxy.policies.registry``) by name, ``package.module:Class`` or entry point.

    Lifecycle of one call, as the mechanism (proxy, simulator, engine plug-in) drives it:

    1. ``on_arrival`` once, when the call enters the process table (after it was added to
       ``program.active``). The policy may set ``call.start_service``.
    2. ``priority`` whenever the mechanism re-ranks its queue (each scheduling round, or
       whenever waits may have pushed a call past the anti-starvation threshold).
    3. ``on_service`` each time the mechanism has added to ``call.service`` (usage from the
       stream, or a simulator step); the answer may demote the call mid-run.
    4. ``on_finish`` exactly once when the call leaves, whether DONE, FAILED or cancelled
       (after the call left ``program.active`` and ``program.wait`` has its wait added; every
       mechanism applies that order through ``proxy.core.lifecycle.finished``). The policy updates the program's scalar (``program.service``,
       ``program.critical_path``) and forgets any per-call state, so a mechanism that skips
       it for failed calls leaks that state.

    The mechanism owns the measurements: ``call.service``, ``call.wait`` and
    ``call.queued_since`` (the open waiting stretch, if the call is waiting now),
    ``program.wait`` (waits of completed calls, added when a call finishes), ``program.active``,
    and ``call.oracle_remaining`` in the simulator. Policies read them and write only
    ``call.start_service``, ``call.level``, ``program.service`` and ``program.critical_path``.

    Two optional members let the scheduling core (``proxy.core.queue``) re-rank a waiting
    call only when its rank can change, instead of re-ranking every call before every decision:

    - ``rank_scope``: "call" (a waiting call's rank depends only on the call and time),
      "program" (also on its program's records: siblings' service, ``program.wait``, ...),
      "tenant" (also on other programs of its tenant). The core re-ranks a program's (tenant's)
      waiting calls when one of its calls is served or finishes, and under "tenant" also when
      one arrives (a tenant floor's key counts the tenant's calls in flight).
    - ``stable_until(*, call, program, now) -> float``: until when a *waiting* call's rank holds
      if nothing in its scope changes (anti-starvation deadlines; ``math.inf`` if never).

    A policy that declares neither is re-ranked in full before each decision (correct, O(n)).

    One optional member lets the live proxy report a streaming call's service less often than
    every chunk: ``service_slack(*, call, program, now) -> float``, asked right after
    ``on_service``: how much more ``call.service`` the call may gain before ``on_service`` could
    answer differently if nothing else changes (0: report every chunk; ``math.inf``: never
    again). A policy that does not declare it gets ``on_service`` after every chunk.

    Every method takes keyword arguments only, so the contract can grow new keywords without
    breaking callers; a plug-in that wants to be forward compatible may also accept ``**_``.
    Every method returning a ``Priority`` also sets ``call.level`` to its level.

    Optional attribute (read with ``getattr`` and a default, so a plug-in need not declare it;
    not a Protocol member, so ``isinstance`` checks do not ask for it):

    ``ranks_by``: ``"service"`` (the default) or ``"critical_path"``, the program field the
    policy ranks a program's calls by (``program_scalar``). Mechanisms that rank outside the
    policy read it: the live proxy pushes that field to engines running the scheduler
    plug-in, so the engine orders queued calls as the policy would. ATLAS declares
    ``"critical_path"``.
    """

    @property
    def name(self) -> str:
        """The policy's registry name (used in logs, metrics and error messages)."""
        ...

    @property
    def live_ok(self) -> bool:
        """False for clairvoyant policies (they read ``call.oracle_remaining``, which only the
        simulator knows): the live proxy refuses them at start-up."""
        ...

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        """A new call arrived: set ``call.start_service`` if the policy uses it; return the
        call's first priority."""
        ...

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        """The call's priority at ``now``. Apart from ``call.level``, the only state this may
        change is an anti-starvation promotion, which the policy remembers for the call."""
        ...

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        """``call.service`` has grown: return the call's priority now (possibly demoted)."""
        ...

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        """The call is leaving: fold its service into the program's scalar, drop its state."""
        ...


RanksBy = Literal["service", "critical_path"]
RANKS_BY: tuple[RanksBy, ...] = ("service", "critical_path")


def program_scalar(policy: object, program: Program) -> float:
    """The program's service as ``policy`` ranks its calls by it: the field its ``ranks_by``
    names, ``program.service`` when it declares none."""
    if getattr(policy, "ranks_by", "service") == "critical_path":
        return program.critical_path
    return program.service


@dataclass(frozen=True, slots=True)
class NoConfig:
    """The typed config of a policy that takes no settings."""


def live_wait(call: Call, now: float) -> float:
    """The call's waiting time including the stretch still open at ``now``: the mechanism may
    update ``call.wait`` only when a stretch closes, but starvation must count the open one."""
    since = call.queued_since
    if since is None:
        return call.wait
    open_stretch = now - since
    return call.wait + open_stretch if open_stretch > 0.0 else call.wait


class BasePolicy:
    """Convenience base for policies (built-in or plug-in); subclassing it is optional.

    Subclasses set ``name`` and implement ``priority``. The defaults account service the PLAS
    way, so ``program.service`` stays meaningful in the process table whatever policy runs:
    a call starts at its program's service and, when it finishes, the program's service becomes
    ``max(program.service, call.start_service + call.service)``.
    """

    name: ClassVar[str] = "base"
    live_ok: ClassVar[bool] = True
    ranks_by: ClassVar[RanksBy] = "service"
    Config: ClassVar[type] = NoConfig

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        call.start_service = program.service
        return self.priority(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        raise NotImplementedError

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        return self.priority(call=call, program=program, now=now)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        program.service = max(program.service, call.start_service + call.service)

    def __repr__(self) -> str:
        return f"<policy {self.name}>"


def assigned(call: Call, priority: Priority) -> Priority:
    """Record the level on the call (the process table shows it) and pass the priority on."""
    call.level = priority.level
    return priority
