"""The tenant floor's ledger: credit, floor, decay only while idle, exemptions, sweeping."""

from __future__ import annotations

import pytest

from proxy.policies.tenant import TenantFloor, TenantFloorConfig


def test_floors_are_a_share_of_the_credited_service_and_wait() -> None:
    floor = TenantFloor(TenantFloorConfig(share=0.5, half_life_s=None))
    floor.arrive("t", now=0.0)
    assert floor.floor("t", now=0.0) == 0.0
    floor.finish("t", service=6.0, wait=4.0, now=6.0)
    assert floor.floor("t", now=6.0) == 3.0
    assert floor.wait_floor("t", now=6.0) == 2.0
    assert floor.floor("t", now=1e9) == 3.0  # no half-life: never forgiven
    assert floor.floor("unknown", now=0.0) == 0.0
    assert floor.wait_floor("unknown", now=0.0) == 0.0


def test_decays_only_while_the_tenant_is_idle() -> None:
    floor = TenantFloor(TenantFloorConfig(share=1.0, half_life_s=10.0))
    floor.arrive("t", now=0.0)
    floor.arrive("t", now=0.0)
    floor.finish("t", service=8.0, wait=0.0, now=5.0)
    assert floor.floor("t", now=100.0) == 8.0  # one call still in flight: no decay
    floor.finish("t", service=0.0, wait=2.0, now=100.0)
    assert floor.floor("t", now=110.0) == pytest.approx(4.0)  # idle one half-life
    assert floor.wait_floor("t", now=110.0) == pytest.approx(1.0)
    floor.arrive("t", now=120.0)  # back: the decay so far is kept, and stops
    assert floor.floor("t", now=500.0) == pytest.approx(2.0)


def test_exempt_and_anonymous_tenants_have_no_floor() -> None:
    floor = TenantFloor(TenantFloorConfig(exempt=("anonymous",)))
    for tenant in ("", "anonymous"):
        floor.arrive(tenant, now=0.0)
        floor.finish(tenant, service=100.0, wait=0.0, now=1.0)
        assert floor.floor(tenant, now=1.0) == 0.0
    assert len(floor) == 0


def test_forgiven_idle_ledgers_are_dropped() -> None:
    floor = TenantFloor(TenantFloorConfig(half_life_s=1.0))
    floor.arrive("gone", now=0.0)
    floor.finish("gone", service=1.0, wait=0.0, now=0.0)
    floor.arrive("busy", now=0.0)
    floor.sweep(now=10.0)
    assert len(floor) == 2
    floor.sweep(now=1000.0)
    assert len(floor) == 1  # "busy" has a call in flight
    assert floor.floor("busy", now=1000.0) == 0.0


def test_sweeps_by_itself_as_calls_arrive() -> None:
    floor = TenantFloor(TenantFloorConfig(half_life_s=1.0))
    for i in range(2000):
        floor.arrive(f"t{i}", now=float(i))
        floor.finish(f"t{i}", service=1.0, wait=0.0, now=float(i))
    assert len(floor) < 1100


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"share": 0.0}, "share"), ({"share": 1.5}, "share"), ({"half_life_s": 0.0}, "half_life")],
)
def test_bad_settings_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TenantFloorConfig(**settings)  # type: ignore[arg-type]
