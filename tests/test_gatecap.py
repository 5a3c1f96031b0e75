"""The live gate's admission cap: a fixed k holds calls at the gate in front of an engine that
has no max_inflight, and hands the freed place to the best waiting call; the adaptive cap
reads the tokens of the calls it granted; the setting is validated."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig, GateSettings
from proxy.core.concurrency import CapConfig
from proxy.gate import Gate, GateConfig
from proxy.gatecap import SAMPLE_S, GateCaps
from proxy.kvhints.pool import EnginePool
from proxy.policies.fcfs import FCFS
from proxy.policies.registry import PolicyRegistry
from tests.test_gate import _gate, _ticket, settle


async def test_fixed_cap_holds_calls_and_admits_the_best_first() -> None:
    gate, _ = _gate(max_inflight=None, preempt=False, cap="fixed", cap_k=2)
    running = [_ticket("a", 5), _ticket("b", 5)]
    for t in running:
        await gate.acquire(t)
    order: list[str] = []

    async def wait(t: object) -> None:
        await gate.acquire(t)  # type: ignore[arg-type]
        order.append(t.call.id)  # type: ignore[attr-defined]

    worse, better = _ticket("worse", 6, arrival=1.0), _ticket("better", 1, arrival=2.0)
    tasks = [asyncio.create_task(wait(worse)), asyncio.create_task(wait(better))]
    await settle()
    assert gate.running("e") == 2  # the engine would take more: the cap holds them
    assert [t.call.id for t in gate.waiting] == ["better", "worse"]
    gate.release(running[0])
    await settle()
    assert order == ["better"]
    gate.release(running[1])
    await asyncio.gather(*tasks)
    assert order == ["better", "worse"]


async def test_max_inflight_below_the_cap_still_rules() -> None:
    gate, _ = _gate(max_inflight=1, cap="fixed", cap_k=4)
    await gate.acquire(_ticket("a", 5))
    waiter = asyncio.create_task(gate.acquire(_ticket("b", 5)))
    await settle()
    assert gate.queued == 1
    waiter.cancel()


async def test_adaptive_cap_samples_the_tokens_of_granted_calls() -> None:
    gate, clock = _gate(max_inflight=None, cap="adaptive")
    tickets = [_ticket(str(i), 5) for i in range(3)]
    for t in tickets:
        await gate.acquire(t)
    tickets[0].call.completion_tokens = 40
    tickets[1].call.completion_tokens = 20
    gate.release(tickets[1])  # its 20 tokens count although it left
    clock.now = 1.0
    await gate.acquire(_ticket("late", 5))  # a decision: the gate samples
    state = gate.caps._engines["e"]
    assert state.last_tokens == 60


def test_caps_follow_mode_and_max_inflight() -> None:
    fixed = GateCaps(CapConfig(mode="fixed", k=8), now=0.0)
    assert fixed.cap("e", None, 0.0) == 8
    assert fixed.cap("e", 4, 0.0) == 4
    off = GateCaps(CapConfig(), now=0.0)
    assert not off.on
    assert off.cap("e", None, 0.0) is None
    adaptive = GateCaps(CapConfig(mode="adaptive"), now=0.0)
    assert adaptive.cap("e", None, 0.0) == 256  # starts at the engine's (assumed) limit
    # Tokens/s at varied running counts on an engine stepping in 10 ms + 0.3 ms per call.
    t, produced = 0.0, 0.0
    for i in range(600):
        n = 5 + (i * 11) % 90
        t += SAMPLE_S
        produced += SAMPLE_S * n / (0.010 + 0.0003 * n)
        assert adaptive.sample(t, [("e", n, int(produced))], waiting=0)
    fit = adaptive._engines["e"].controller.fit
    assert fit is not None
    assert fit.per_seq_s == pytest.approx(0.0003, rel=0.05)
    assert adaptive.cap("e", None, t) == 34  # nobody waits: down to the knee


def test_settings_need_k_for_a_fixed_cap() -> None:
    with pytest.raises(ValidationError, match="cap_k"):
        GateSettings(cap="fixed")
    assert GateSettings(cap="fixed", cap_k=3).cap_k == 3
    with pytest.raises(ValidationError):
        GateSettings(cap="sometimes")  # type: ignore[arg-type]


def test_fcfs_gate_keeps_no_standing_queue() -> None:
    engine = EngineConfig(name="e", url="http://e", models=["m"])
    pool = EnginePool([make_backend(engine)])
    fcfs = Gate(pool, FCFS(), GateConfig(cap="adaptive"), lambda: 0.0)
    assert fcfs.caps.config.alpha == 0.0  # it never shrinks: nothing to reorder
    ranked, _ = _gate(cap="adaptive")
    assert ranked.caps.config.alpha > 0.0


async def test_auto_caps_plas_only_on_engines_that_evict_by_rank() -> None:
    engines = [
        EngineConfig(name="stock", url="http://a", models=["m"]),
        EngineConfig(name="plugin", url="http://b", models=["m"], kv_evict="rank"),
    ]
    pool = EnginePool([make_backend(e) for e in engines])
    gate = Gate(pool, PolicyRegistry().create("plas"), GateConfig(cap="auto"), lambda: 0.0)
    await gate.acquire(_ticket("a", 5))  # a decision: the gate mirrors its engines
    assert gate.caps.on
    assert gate.core.engine("stock").cap is None  # LRU: the cap would cost cached contexts
    assert gate.core.engine("plugin").cap == 256  # adaptive, from the engine's assumed limit
    # fcfs gains nothing from a cap on either; the setting is refused where unknown.
    fcfs = Gate(EnginePool([make_backend(e) for e in engines]), FCFS(), GateConfig(cap="auto"),
                lambda: 0.0)  # fmt: skip
    assert not fcfs.caps.on
    with pytest.raises(ValidationError):
        EngineConfig(name="x", url="http://x", kv_evict="mru")  # type: ignore[arg-type]
