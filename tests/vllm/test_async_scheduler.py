"""The plug-in's scheduler classes on vLLM 0.32.0's real ``Scheduler`` and ``AsyncScheduler``,
in-process (tests/vllm/schedharness.py): no server, no model runner, no GPU.

``AutellixAsyncScheduler`` is what GPU builds run, and a CPU server never runs it (vLLM's CPU
platform forces synchronous scheduling). Here it is driven with its outputs one step late, as
the engine core drives it, beside ``AutellixScheduler`` with outputs at once. Every call is
checked to finish with exactly its tokens, vLLM's placeholder and stale-output counters after
every step, and the plug-in's record for any failure it swallowed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.backends.plugin_env import LEGACY_PREFIX, PREFIX, SETTINGS
from proxy.backends.vllm_plugin.inflight import last_step_in_flight
from tests.vllm.conftest import skip_module_without_vllm
from tests.vllm.tinymodel import make_tiny_llama

skip_module_without_vllm()

from tests.vllm.schedharness import (  # noqa: E402 (after the skip: it imports vLLM)
    VARIANTS,
    Harness,
    RequestStatus,
    Variant,
    expected_tokens,
    model_config,
    request_id,
)

pytestmark = pytest.mark.vllm

MIN_QUANTUM = 4  # AUTELLIX_PLUGIN_MIN_QUANTUM_TOKENS for these tests
BOTTOM = 1000.0  # a program's attained service that puts its calls in the bottom level (7)
MIDDLE = 3.0  # level 3
NEAR_TOP = 0.7  # level 1
FRESH = 0.0  # level 0

Make = Callable[..., Harness]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return model_config(make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture
def make(tiny_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Make]:
    """Builds harnesses with the plug-in's settings in the environment, where vLLM's engine
    would have them; each writes its record to a file of its own."""
    for name in SETTINGS:
        monkeypatch.delenv(PREFIX + name, raising=False)
        monkeypatch.delenv(LEGACY_PREFIX + name, raising=False)
    monkeypatch.setenv(PREFIX + "POLICY", "plas")
    monkeypatch.setenv(PREFIX + "MIN_QUANTUM_TOKENS", str(MIN_QUANTUM))
    # No anti-starvation: its promotions follow the wall clock, and these tests follow steps.
    monkeypatch.setenv(PREFIX + "BETA", "off")
    built: list[Harness] = []

    def make_(variant: Variant, **kwargs: Any) -> Harness:
        log = tmp_path / f"{variant.name}-{len(built)}.jsonl"
        monkeypatch.setenv(PREFIX + "SCHED_LOG", str(log))
        harness = Harness(variant, tiny_model, **kwargs)
        built.append(harness)
        return harness

    yield make_
    for harness in built:
        harness.close()


def assert_all_served(h: Harness, max_tokens: dict[str, int]) -> None:
    for call, n in max_tokens.items():
        rid = request_id(call)
        assert h.tokens[rid] == expected_tokens(n), f"{call}: tokens lost or repeated"
        assert h.finish_reasons[rid] == "length", call
    assert h.sched.kv_cache_manager.usage == 0.0  # every block went back to the pool


def scheduled_calls(h: Harness) -> list[str]:
    return [e["call"] for e in h.events("scheduled")]


def where(h: Harness, event: str, call: str) -> list[int]:
    """Indexes in the record (the scheduler's order) of ``event`` for ``call``."""
    return [i for i, e in enumerate(h.events()) if e["event"] == event and e.get("call") == call]


# -- admission order ----------------------------------------------------------------------


def admission_scenario(h: Harness) -> dict[str, int]:
    """Four calls queue before the first step, the worst first; two slots."""
    calls = {"a": BOTTOM, "b": MIDDLE, "c": FRESH, "d": NEAR_TOP}  # arrival order
    for call, service in calls.items():
        h.submit(call, service=service, max_tokens=3)
    return dict.fromkeys(calls, 3)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_waiting_calls_are_admitted_in_policy_order(make: Make, variant: Variant) -> None:
    h = make(variant)
    served = admission_scenario(h)

    first = h.step()
    # What vLLM hands the runner: the two least-served programs' calls, not the first two.
    assert {r.req_id for r in first.scheduled_new_reqs} == {request_id("c"), request_id("d")}
    h.run_until_idle()

    assert scheduled_calls(h) == ["c", "d", "b", "a"]  # FCFS would be a, b, c, d
    assert not h.events("preempted")  # each later call is worse than those running
    assert [e["level"] for e in h.events("scheduled")] == [0, 1, 3, 7]
    assert_all_served(h, served)


# -- preemption ---------------------------------------------------------------------------


def preemption_scenario(h: Harness) -> dict[str, int]:
    """Two bottom-level calls fill the slots; one step later a top-level call and a
    bottom-level peer arrive, while the fillers are still inside their quantum."""
    served = {"f1": 20, "f2": 20, "peer": 4, "high": 6}
    h.submit("f1", service=BOTTOM, max_tokens=served["f1"])
    h.submit("f2", service=BOTTOM, max_tokens=served["f2"])
    h.step()
    h.submit("peer", service=BOTTOM, max_tokens=served["peer"])
    h.submit("high", service=FRESH, max_tokens=served["high"])
    return served


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_a_better_arrival_preempts_after_the_quantum_and_the_victim_resumes(
    make: Make, variant: Variant
) -> None:
    h = make(variant)
    served = preemption_scenario(h)
    high, victim = request_id("high"), request_id("f2")

    waited, out = 0, h.step()
    while not h.events("preempted"):
        # Both fillers are inside their quantum: the call waits and nothing is preempted.
        assert high not in out.num_scheduled_tokens
        waited += 1
        assert waited < 20, "the top-level call never got a slot"
        out = h.step()
    assert waited > 0

    (preempted,) = h.events("preempted")
    # The worse filler (same level as the other, later arrival) makes room, once it has
    # generated its quantum since admission; the peer, no better than the fillers, takes none.
    assert preempted["call"] == "f2"
    assert preempted["by"] == "autellix"
    assert preempted["beneficiary"] == high
    assert preempted["level"] == 7
    assert preempted["tokens"] >= MIN_QUANTUM
    assert preempted["blocks_held"] > 0
    assert preempted["blocks_after"] == 0

    # In the same step vLLM tells the runner of the preemption and schedules the call.
    assert victim in out.preempted_req_ids
    assert [r.req_id for r in out.scheduled_new_reqs] == [high]
    # Async: the victim had a step in flight, whose output is then stale (vLLM drains it).
    assert (victim in h.stale_preemptions) == variant.asynchronous

    h.run_until_idle()
    assert len(h.events("preempted")) == 1
    order = scheduled_calls(h)
    assert order == ["f1", "f2", "high", "f2", "peer"]
    (_, resumed) = where(h, "scheduled", "f2")
    assert h.events()[resumed]["resumed"] is True
    # It waited for the better call to finish, or (async) to have its last token in flight.
    (high_done,) = where(h, "released", "high") or where(h, "finished", "high")
    assert resumed > high_done
    assert_all_served(h, served)


# -- a slot about to free itself -----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_a_call_with_its_last_token_in_flight_gives_its_slot_without_a_preemption(
    make: Make, variant: Variant
) -> None:
    """Synchronously a call that has generated its last token is gone before the next step,
    and a waiting call takes its slot. Async, that token is still in flight when the next step
    is scheduled: the call's slot goes to the waiting call all the same, and no running call
    is preempted (and recomputed) for it."""
    h = make(variant)
    h.submit("f", service=BOTTOM, max_tokens=10)
    h.submit("r", service=BOTTOM, max_tokens=30)  # the worse of the two (later arrival)
    f = request_id("f")
    while f in h.sched.requests and not last_step_in_flight(h.sched.requests[f]):
        h.step()
    h.submit("w", service=FRESH, max_tokens=4)
    out = h.step()

    assert request_id("w") in out.num_scheduled_tokens
    assert not h.events("preempted")
    assert len(h.events("released")) == (1 if variant.asynchronous else 0)
    for released in h.events("released"):
        assert released["call"] == "f"
        assert released["beneficiary"] == request_id("w")
    h.run_until_idle()
    assert scheduled_calls(h) == ["f", "r", "w"]
    assert_all_served(h, {"f": 10, "r": 30, "w": 4})


# -- aborts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_aborting_a_paused_streaming_session_frees_it(make: Make, variant: Variant) -> None:
    """A streaming-input session that ended its turn waits for more input in vLLM's queue of
    requests holding KV blocks, not in the plug-in's; vLLM's abort asks every waiting queue to
    drop it, and the plug-in's queue must not fail on one it does not hold."""
    h = make(variant)
    rid = h.submit("s", service=FRESH, max_tokens=3, session=True)
    for _ in range(10):
        h.step()
    assert h.sched.requests[rid].status == RequestStatus.WAITING_FOR_STREAMING_REQ
    assert h.tokens[rid] == expected_tokens(3)  # the turn's tokens reached the client

    h.abort("s")
    h.run_until_idle()
    assert rid not in h.sched.requests
    (finished,) = h.events("finished")
    assert finished["status"] == "FINISHED_ABORTED"
    assert h.sched.kv_cache_manager.usage == 0.0


# -- one record for both classes ----------------------------------------------------------


@pytest.mark.parametrize("scenario", [admission_scenario, preemption_scenario])
def test_every_variant_records_the_same_admissions_and_preemptions(
    make: Make, scenario: Callable[[Harness], object]
) -> None:
    runs = {}
    for variant in VARIANTS:
        h = make(variant)
        scenario(h)
        h.run_until_idle()
        runs[variant.name] = h.decisions()
        h.close()
        log = Path(h.sched.autellix_settings.log_path)
        written = [json.loads(line) for line in log.read_text().splitlines()]
        assert written == list(h.sched.record.events)  # the file holds the whole record
    assert runs == dict.fromkeys(runs, runs["sync"])
    assert any(d[0] == "preempted" for d in runs["sync"]) == (scenario is preemption_scenario)


# -- a seeded workload --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 4, 7])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_a_mixed_workload_with_kv_pressure_and_aborts_ends_clean(
    make: Make, variant: Variant, seed: int
) -> None:
    """Many programs, few KV blocks (vLLM's own preemptions too) and aborts at any time: no
    assertion in vLLM's bookkeeping, and every call that was not aborted gets all its tokens."""
    rng = random.Random(seed)
    h = make(variant, slots=3, kv_blocks=8)
    arrivals = sorted(
        (
            rng.randrange(60),
            f"w{i}",
            rng.choice([FRESH, 0.3, 2.0, 10.0, BOTTOM]),
            rng.randint(1, 40),
        )
        for i in range(24)
    )
    aborts = {rng.randrange(80): f"w{rng.randrange(24)}" for _ in range(4)}
    wanted = {call: n for _, call, _, n in arrivals}
    aborted: set[str] = set()
    step = 0
    while step < 2000 and (arrivals or h.sched.has_requests()):
        while arrivals and arrivals[0][0] <= step:
            _, call, service, n = arrivals.pop(0)
            h.submit(call, service=service, max_tokens=n)
        call = aborts.get(step, "")
        if request_id(call) in h.sched.requests:
            h.abort(call)
            aborted.add(call)
        h.step()
        step += 1
    h.run_until_idle()

    # Every call the plug-in preempted made room for one vLLM admitted in that same step.
    assert not h.idle_preemptions
    by = [e["by"] for e in h.events("preempted")]
    # Both kinds of preemption were exercised.
    assert "autellix" in by
    assert "vllm" in by
    if variant.asynchronous:
        assert h.stale_preemptions  # and preemptions with output still in flight
    for e in h.events("finished"):
        rid, call = e["req"], e["call"]
        got = h.tokens[rid]
        assert got == expected_tokens(len(got)), f"{call}: tokens out of order"
        if call not in aborted:
            assert e["status"] == "FINISHED_LENGTH_CAPPED", call
            assert len(got) == wanted[call], call
    assert len(h.events("finished")) == 24
    assert h.sched.kv_cache_manager.usage == 0.0
