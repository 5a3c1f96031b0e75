"""Tenant floor: a program ranks as if it had consumed at least a share of its tenant's recent
service, so a client that claims a fresh program id for every call gains nothing (AUTELLIX.md,
"Known weaknesses": the paper has no defense against id rotation).

It is a component that PLAS and ATLAS mix in through their config (``tenant_floor``); off by
default. The policy credits the tenant with every increase of the program scalar it ranks by
(``program.service`` for PLAS, ``program.critical_path`` for ATLAS) and with every finished
call's wait, and ranks each call as if its program's scalar were ``max(program scalar, share *
tenant service)`` and, for anti-starvation, its program's wait ``max(program wait, share *
tenant wait)``. Both halves matter: raising only T would make a busy tenant's fresh programs
starve longer than the same calls in one program. With ``share = 1`` a tenant's calls rank
exactly as if they all belonged to one program, whatever ids they carry.

The ledger decays (half-life ``half_life_s``) only while the tenant has nothing in flight: a
tenant that keeps calling is never forgiven, one that went quiet is, gradually. Decaying while
busy would let a tenant that rotates ids out-rank the same work done under one id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Ledgers that decayed below this, with nothing in flight, are dropped: they no longer matter.
_NEGLIGIBLE = 1e-9
# Idle ledgers are swept once every this many arrivals, so memory follows active tenants.
_SWEEP_EVERY = 1024


@dataclass(frozen=True, slots=True)
class TenantFloorConfig:
    """share: fraction of the tenant ledger a program ranks at, at least (0 < share <= 1).
        1 makes id rotation worthless but also ranks a tenant's concurrent programs as one
        (tenant-level attained service); a smaller share lets a tenant run a few programs side
        by side unpenalized, at the price of letting a rotating tenant gain up to 1 / share.
    half_life_s: half-life of the ledger while the tenant is idle, in seconds of ``now``;
        None never forgets.
    exempt: tenants the floor ignores ("" is always exempt: calls with no tenant at all).
    weights: a tenant's weight divides its ledger (missing: 1), so a tenant of weight 2 ranks
        as if it had consumed half as much: it gets twice the share when tenants compete.
    fair_key: inside a level, rank calls by their tenant's (weighted) service instead of by
        arrival, so that the least served tenant goes first at every level, the last included.
        Without it, tenants that all reached the last level are served per call in arrival
        order, and the one that keeps the most calls queued gets the most service.
    """

    share: float = 1.0
    half_life_s: float | None = 600.0
    exempt: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=dict)
    fair_key: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("share must be in (0, 1]")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise ValueError("half_life_s must be positive (or null for no decay)")
        if any(not (w > 0 and math.isfinite(w)) for w in self.weights.values()):
            raise ValueError("weights must be positive finite numbers")


@dataclass(slots=True)
class _Ledger:
    value: float = 0.0  # service credited
    waited: float = 0.0  # waits of finished calls credited
    calls: float = 0.0  # finished calls (decayed like the rest)
    running: float = 0.0  # the part of value credited to calls still in flight
    in_flight: int = 0
    idle_since: float | None = None  # when in_flight last dropped to 0


class TenantFloor:
    """Per-tenant ledgers of recent service; owned by one policy instance (no globals).

    The owning policy calls ``arrive`` from ``on_arrival`` and ``finish`` from ``on_finish``
    for every call, and ``floor`` / ``wait_floor`` when it ranks one.
    """

    __slots__ = ("_arrivals", "_credited", "_exempt", "_ledgers", "config")

    def __init__(self, config: TenantFloorConfig) -> None:
        self.config = config
        self._exempt = frozenset(config.exempt) | {""}
        self._ledgers: dict[str, _Ledger] = {}
        self._arrivals = 0
        # Service of running calls credited as it is served, by call id: a tenant whose long
        # calls have not finished yet must not look idle to the calls it queues meanwhile.
        self._credited: dict[str, float] = {}

    def _factor(self, ledger: _Ledger, now: float) -> float:
        half_life = self.config.half_life_s
        if ledger.idle_since is None or half_life is None or ledger.in_flight:
            return 1.0
        return math.exp2(-max(0.0, now - ledger.idle_since) / half_life)

    def arrive(self, tenant: str, now: float) -> None:
        if tenant in self._exempt:
            return
        ledger = self._ledgers.setdefault(tenant, _Ledger())
        factor = self._factor(ledger, now)
        ledger.value *= factor
        ledger.waited *= factor
        ledger.calls *= factor
        ledger.idle_since = None
        ledger.in_flight += 1
        self._arrivals += 1
        if self._arrivals % _SWEEP_EVERY == 0:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Drop the ledgers of idle tenants that have been forgiven."""
        for tenant in [
            name
            for name, ledger in self._ledgers.items()
            if not ledger.in_flight
            and max(ledger.value, ledger.waited) * self._factor(ledger, now) < _NEGLIGIBLE
        ]:
            del self._ledgers[tenant]

    def serving(self, tenant: str, call_id: str, service: float) -> None:
        """A running call of ``tenant`` has had ``service`` so far: credit what is new."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return
        before = self._credited.get(call_id, 0.0)
        if service > before:
            ledger.value += service - before
            ledger.running += service - before
            self._credited[call_id] = service

    def finish(
        self, tenant: str, *, service: float, wait: float, now: float, call_id: str = ""
    ) -> None:
        """One of the tenant's calls left: ``service`` is how much it raised its program's
        scalar (0 for a call that ended inside a longer sibling's path), ``wait`` its wait.
        What ``serving`` credited already for the call is not credited twice."""
        credited = self._credited.pop(call_id, 0.0)
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return
        ledger.value += max(0.0, service - credited)
        ledger.running = max(0.0, ledger.running - credited)
        ledger.calls += 1
        ledger.waited += max(0.0, wait)
        ledger.in_flight = max(0, ledger.in_flight - 1)
        if ledger.in_flight == 0:
            ledger.idle_since = now

    def floor(self, tenant: str, now: float) -> float:
        """The least service a program of ``tenant`` ranks at, at ``now``."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return 0.0
        weight = self.config.weights.get(tenant, 1.0)
        return self.config.share * ledger.value * self._factor(ledger, now) / weight

    def key(self, tenant: str, now: float, arrival: float) -> float:
        """The in-level rank of a call of ``tenant``: with ``fair_key``, the service its
        tenant has had plus what its calls in flight are expected to take, weighted; else the
        call's arrival (FCFS inside the level).

        Counting only service had so far would let a tenant of long calls win slot after slot
        while its running calls have barely begun (each then holds its slot for long): a call
        in flight is charged the tenant's mean call at least, its real progress when larger."""
        if not self.config.fair_key or tenant in self._exempt:
            return arrival
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return 0.0
        finished = ledger.value - ledger.running
        mean = finished / ledger.calls if ledger.calls >= 1 else 0.0
        expected = finished + max(ledger.in_flight * mean, ledger.running)
        weight = self.config.weights.get(tenant, 1.0)
        return expected * self._factor(ledger, now) / weight

    def wait_floor(self, tenant: str, now: float) -> float:
        """The least program wait anti-starvation counts for a program of ``tenant``."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return 0.0
        return self.config.share * ledger.waited * self._factor(ledger, now)

    def __len__(self) -> int:
        return len(self._ledgers)


def with_tenant_fairness(
    policy: str, settings: Mapping[str, Any], weights: Mapping[str, float]
) -> dict[str, Any]:
    """Policy settings with tenant fairness turned on, when client keys are configured
    (``weights`` non-empty) and the policy has a tenant floor that the operator left unset:
    keys make tenants real, and then a tenant's service counts at every level (share 1,
    ``fair_key``), weighted by its key's weight."""
    out = dict(settings)
    if weights and policy in ("plas", "atlas") and out.get("tenant_floor") is None:
        out["tenant_floor"] = {"share": 1.0, "weights": dict(weights), "fair_key": True}
    return out
