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
from dataclasses import dataclass

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
    """

    share: float = 1.0
    half_life_s: float | None = 600.0
    exempt: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError("share must be in (0, 1]")
        if self.half_life_s is not None and not self.half_life_s > 0:
            raise ValueError("half_life_s must be positive (or null for no decay)")


@dataclass(slots=True)
class _Ledger:
    value: float = 0.0  # service credited
    waited: float = 0.0  # waits of finished calls credited
    in_flight: int = 0
    idle_since: float | None = None  # when in_flight last dropped to 0


class TenantFloor:
    """Per-tenant ledgers of recent service; owned by one policy instance (no globals).

    The owning policy calls ``arrive`` from ``on_arrival`` and ``finish`` from ``on_finish``
    for every call, and ``floor`` / ``wait_floor`` when it ranks one.
    """

    __slots__ = ("_arrivals", "_exempt", "_ledgers", "config")

    def __init__(self, config: TenantFloorConfig) -> None:
        self.config = config
        self._exempt = frozenset(config.exempt) | {""}
        self._ledgers: dict[str, _Ledger] = {}
        self._arrivals = 0

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

    def finish(self, tenant: str, *, service: float, wait: float, now: float) -> None:
        """One of the tenant's calls left: ``service`` is how much it raised its program's
        scalar (0 for a call that ended inside a longer sibling's path), ``wait`` its wait."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return
        ledger.value += max(0.0, service)
        ledger.waited += max(0.0, wait)
        ledger.in_flight = max(0, ledger.in_flight - 1)
        if ledger.in_flight == 0:
            ledger.idle_since = now

    def floor(self, tenant: str, now: float) -> float:
        """The least service a program of ``tenant`` ranks at, at ``now``."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return 0.0
        return self.config.share * ledger.value * self._factor(ledger, now)

    def wait_floor(self, tenant: str, now: float) -> float:
        """The least program wait anti-starvation counts for a program of ``tenant``."""
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return 0.0
        return self.config.share * ledger.waited * self._factor(ledger, now)

    def __len__(self) -> int:
        return len(self._ledgers)
