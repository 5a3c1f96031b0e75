"""Tenant fairness with client keys: a tenant's weighted service counts at every level, so
one that sends long calls under fresh program ids gets no more than its share."""

from __future__ import annotations

from collections import Counter

import pytest

from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.registry import PolicyRegistry
from proxy.policies.tenant import with_tenant_fairness
from tests.policies.harness import CallSpec, Trace, chain, run

TENANTS = ["attacker", "h1", "h2", "h3", "h4"]
LOOPS = 4
CAPACITY = 4
WINDOW = 120  # slots in which every tenant still has calls waiting


def workload(*, rotate: bool) -> list[CallSpec]:
    specs: list[CallSpec] = []
    for tenant in TENANTS:
        for loop in range(LOOPS):
            name = f"{tenant}-{loop}-"
            works = [12] * 12 if tenant == "attacker" else [2] * 60
            calls = chain(name, works, tenant=tenant)
            if rotate and tenant == "attacker":
                calls = [CallSpec(c.id, c.id, c.work, c.after, c.at, c.tenant) for c in calls]
            specs += calls
    return specs


def shares(trace: Trace, window: int = WINDOW) -> dict[str, float]:
    served: Counter[str] = Counter()
    for slot in trace.ran[:window]:
        for call_id in slot:
            served[trace.programs[trace.calls[call_id].program_id].tenant] += 1
    total = sum(served.values())
    return {tenant: served[tenant] / total for tenant in TENANTS}


def keyed_plas(weights: dict[str, float]) -> PLAS:
    settings = with_tenant_fairness("plas", {}, weights)
    policy = PolicyRegistry().create("plas", settings)
    assert isinstance(policy, PLAS)
    return policy


@pytest.mark.parametrize("rotate", [False, True])
def test_attacker_gets_at_most_its_share_with_keys(rotate: bool) -> None:
    trace = run(keyed_plas(dict.fromkeys(TENANTS, 1.0)), workload(rotate=rotate), capacity=CAPACITY)
    got = shares(trace)
    assert got["attacker"] <= 1 / len(TENANTS) + 0.05, got
    # Honest tenants are not starved either: each gets about its fifth.
    assert min(got[t] for t in TENANTS[1:]) >= 1 / len(TENANTS) - 0.05, got


def test_without_keys_the_rotating_attacker_takes_more() -> None:
    """The same workload under plain PLAS: the bound above is not met by accident."""
    trace = run(PLAS(PLASConfig()), workload(rotate=True), capacity=CAPACITY)
    assert shares(trace)["attacker"] > 1 / len(TENANTS) + 0.05


def test_weights_divide_service() -> None:
    weights = {**dict.fromkeys(TENANTS, 1.0), "h1": 2.0}
    got = shares(run(keyed_plas(weights), workload(rotate=False), capacity=CAPACITY))
    assert got["h1"] >= 1.6 * got["h2"], got


def test_operator_floor_settings_are_kept() -> None:
    mine = {"tenant_floor": {"share": 0.5}}
    assert with_tenant_fairness("plas", mine, {"a": 1.0}) == mine
    assert with_tenant_fairness("fcfs", {}, {"a": 1.0}) == {}
    assert with_tenant_fairness("plas", {}, {}) == {}
