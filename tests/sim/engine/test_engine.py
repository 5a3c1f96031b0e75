"""The engine model against schedules computed by hand, vLLM's scheduling rules, and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.engine import EngineModel, EngineRequest, RequestStatus
from proxy.sim.engine.queues import PriorityQueue, make_queue
from tests.sim.engine.by_hand import model, req, run


def test_chunked_prefill_then_decodes_by_hand() -> None:
    engine = model()
    a = req("a", prompt=10, target=3)
    engine.add(a, 0.0)

    # Step 1: budget 8 of the 10 prompt tokens; no token yet. 1 + 8 x 0.01.
    first = engine.step(0.0)
    assert first.duration == pytest.approx(1.08)
    assert first.emitted == ()
    assert a.num_computed == 8
    assert a.num_blocks == 2
    # B arrives during step 1 and joins step 2 next to A's last chunk: 2 + 6 prefilled tokens.
    b = req("b", prompt=6, target=1, arrival=1.0)
    engine.add(b, 1.0)
    second = engine.step(first.end)
    assert second.duration == pytest.approx(1.08)
    assert [r.id for r in second.emitted] == ["a", "b"]
    assert [r.id for r in second.finished] == ["b"]
    assert b.finish_reason == "stop"
    assert a.first_token_time == pytest.approx(2.16) == b.finish_time
    # Steps 3 and 4: A decodes alone, 1 + 0.1 each; its third token stops it.
    third = engine.step(second.end)
    assert third.duration == pytest.approx(1.1)
    assert third.num_decodes == 1
    fourth = engine.step(third.end)
    assert fourth.end == pytest.approx(4.36)
    assert a.status is RequestStatus.FINISHED
    assert a.finish_reason == "stop"
    assert a.num_output == 3
    assert not engine.has_work
    assert engine.kv_usage == 0.0
    assert engine.step(fourth.end).idle


def test_prefill_first_without_chunking_by_hand() -> None:
    # vLLM 0.6's default: a step prefills whole prompts of waiting requests, or decodes.
    engine = model(chunked_prefill=False, max_num_batched_tokens=16)
    a = req("a", prompt=10, target=3)
    engine.add(a, 0.0)
    # Step 1: A's whole prompt at once (no chunk of 8): 1 + 10 x 0.01, and its first token.
    first = engine.step(0.0)
    assert first.duration == pytest.approx(1.1)
    assert [r.id for r in first.emitted] == ["a"]
    # B arrives: step 2 prefills B alone while A's decode waits (head-of-line blocking).
    b = req("b", prompt=6, target=2, arrival=1.0)
    engine.add(b, 1.0)
    second = engine.step(first.end)
    assert (second.num_prefill_tokens, second.num_decodes) == (6, 0)
    assert second.duration == pytest.approx(1.06)
    assert [r.id for r in second.emitted] == ["b"]
    # Step 3: no prefill to do, both decode (1 + 2 x 0.1); B's second token stops it.
    third = engine.step(second.end)
    assert (third.num_prefill_tokens, third.num_decodes) == (0, 2)
    assert [r.id for r in third.finished] == ["b"]
    fourth = engine.step(third.end)
    assert [r.id for r in fourth.finished] == ["a"]
    assert fourth.end == pytest.approx(1.1 + 1.06 + 1.2 + 1.1)
    assert engine.kv_usage == 0.0


def test_prefill_first_budget_and_watermark() -> None:
    # Budget 8: a 10-token prompt runs alone, and the next prompt waits for the next step.
    engine = model(chunked_prefill=False, max_num_batched_tokens=8)
    engine.add(req("long", prompt=10, target=2), 0.0)
    engine.add(req("short", prompt=4, target=1), 0.0)
    assert engine.step(0.0).num_prefill_tokens == 10
    assert engine.step(1.0).num_prefill_tokens == 4
    # 100 blocks of 4 keep a 1-block watermark free while anything runs: B, needing all the
    # 99 free blocks, waits for A to finish instead of being admitted next to it.
    engine = model(chunked_prefill=False, max_num_batched_tokens=400, kv_capacity_tokens=400)
    a = req("a", prompt=4, target=3)
    b = req("b", prompt=396, target=1)
    engine.add(a, 0.0)
    engine.add(b, 0.0)
    steps = run(engine)
    assert [done for _, _, done in steps if done] == [["a"], ["b"]]
    assert steps[0][1] == ["a"]  # B was not prefilled next to A


def test_max_tokens_cuts_with_length_and_ignore_eos_runs_to_max() -> None:
    engine = model()
    engine.add(req("short", prompt=4, target=10, max_tokens=2), 0.0)
    engine.add(req("forever", prompt=4, target=None, max_tokens=5), 0.0)
    steps = run(engine)
    finished = {rid: i for i, (_, _, done) in enumerate(steps) for rid in done}
    assert finished == {"short": 1, "forever": 4}


def test_decode_cost_counts_context_tokens() -> None:
    cost = CostModel(
        base_s=0.0,
        decode_per_seq_s=0.0,
        decode_per_kv_token_s=1.0,
        prefill_per_token_s=0.0,
        prefill_attn_per_pair_s=0.0,
    )
    engine = model(cost=cost)
    engine.add(req("a", prompt=5, target=3), 0.0)
    engine.step(0.0)  # prefill: no decode context
    assert engine.step(1.0).duration == 6.0  # decodes over prompt + 1 generated token
    assert engine.step(2.0).duration == 7.0


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_priority_reorders_waiting_only_and_never_preempts_running(policy: str) -> None:
    engine = model(max_num_seqs=1, queue=make_queue(policy))  # type: ignore[arg-type]
    engine.add(req("low", prompt=4, target=3, priority=9, arrival=0.0), 0.0)
    engine.step(0.0)
    engine.add(req("mid", prompt=4, target=1, priority=5, arrival=1.0), 1.0)
    engine.add(req("top", prompt=4, target=1, priority=0, arrival=2.0), 2.0)
    expected = ["top", "mid"] if policy == "priority" else ["mid", "top"]
    assert [r.id for r in engine.waiting] == expected
    steps = run(engine, 2.0)
    # "low" keeps its slot to the end: better arrivals only jump the waiting queue.
    assert [done for _, _, done in steps if done] == [["low"], [expected[0]], [expected[1]]]
    assert engine.num_preemptions == 0


def _kv_squeeze(
    policy: str, *, stagger: bool = False
) -> tuple[EngineModel, EngineRequest, EngineRequest]:
    # 4 blocks of 4 tokens; two requests that each grow to 3-4 blocks cannot both stay.
    queue = make_queue(policy)  # type: ignore[arg-type]
    engine = model(kv_capacity_tokens=16, max_num_batched_tokens=32, queue=queue)
    a = req("a", prompt=4, target=10, priority=1, arrival=0.0)
    b = req("b", prompt=4, target=10, priority=0, arrival=1.0)
    engine.add(a, 0.0)
    if stagger:  # A is admitted alone first, so it sits first in the running list
        engine.step(0.0)
    engine.add(b, 1.0)
    return engine, a, b


def test_kv_exhaustion_preempts_latest_under_fcfs_and_recompute_reprefills() -> None:
    engine, a, b = _kv_squeeze("fcfs")
    for _ in range(5):  # both prefill, then decode to 8 computed tokens (2 blocks each)
        engine.step(0.0)
    assert (a.num_computed, b.num_computed, engine.kv_usage) == (8, 8, 1.0)
    sixth = engine.step(0.0)  # A needs a third block: the latest arrival, B, is the victim
    assert [r.id for r in sixth.preempted] == ["b"]
    assert [r.id for r in sixth.emitted] == ["a"]
    assert (b.status, b.num_computed, b.num_blocks, b.num_output) == (
        RequestStatus.WAITING,
        0,
        0,
        5,
    )
    assert engine.num_preemptions == 1
    assert [r.id for r in engine.waiting] == ["b"]
    # B cannot come back while A holds the cache; when A finishes, B re-prefills 4 + 5 tokens.
    while a.status is not RequestStatus.FINISHED:
        result = engine.step(0.0)
        assert [r.id for r in result.emitted] == ["a"]
    resumed = engine.step(0.0)
    assert resumed.num_prefill_tokens == 9
    assert [r.id for r in resumed.emitted] == ["b"]
    assert b.num_output == 6
    run(engine)
    assert b.num_output == 10
    assert b.finish_reason == "stop"
    assert b.num_preemptions == 1


def test_kv_exhaustion_preempts_worst_priority_even_the_request_being_scheduled() -> None:
    engine, a, b = _kv_squeeze("priority", stagger=True)
    for _ in range(4):  # A decodes to 8 tokens in 2 blocks, B to 7 in 2: the cache is full
        engine.step(0.0)
    assert [r.id for r in engine.running] == ["a", "b"]
    # A asks for a third block first but is itself the worst (priority 1): it preempts itself,
    # and as in vLLM nothing else runs in that step.
    sixth = engine.step(0.0)
    assert [r.id for r in sixth.preempted] == ["a"]
    assert sixth.emitted == ()
    assert not sixth.idle  # a step that only preempted: the caller must step again
    seventh = engine.step(0.0)
    assert [r.id for r in seventh.emitted] == ["b"]
    assert [r.id for r in engine.waiting] == ["a"]
    run(engine)
    assert a.num_preemptions == 1
    assert b.num_preemptions == 0
    assert b.finish_time is not None
    assert a.finish_time is not None
    assert b.finish_time < a.finish_time


def test_priority_victim_is_the_worst_wherever_it_runs() -> None:
    # Admitted together, B (better) runs first; when B needs a block, the victim is A, later in
    # the list and not yet scheduled in this step.
    engine, _, _ = _kv_squeeze("priority")
    for _ in range(5):
        engine.step(0.0)
    assert [r.id for r in engine.running] == ["b", "a"]
    sixth = engine.step(0.0)
    assert [r.id for r in sixth.preempted] == ["a"]
    assert [r.id for r in sixth.emitted] == ["b"]


def test_victim_scheduled_earlier_in_the_step_gives_back_its_tokens() -> None:
    # A (worse priority) sits first in the running list and gets its decode without a new
    # block; then B needs a block and the victim is A, already scheduled: A's token is withdrawn.
    engine = model(kv_capacity_tokens=16, max_num_batched_tokens=32, queue=PriorityQueue())
    a = req("a", prompt=6, target=10, priority=5, arrival=0.0)
    b = req("b", prompt=8, target=8, priority=0, arrival=1.0)
    engine.add(a, 0.0)
    engine.step(0.0)  # A: 6 tokens in 2 blocks
    engine.add(b, 1.0)
    engine.step(1.0)  # A decodes its 7th token; B prefills 8 in 2 blocks; the cache is full
    third = engine.step(2.0)  # A's 8th token fits its blocks; B's 9th needs a third one
    assert [r.id for r in third.preempted] == ["a"]
    assert [r.id for r in third.emitted] == ["b"]
    assert third.num_decodes == 1
    assert engine.kv_usage == 0.75
    assert a.num_blocks == 0
    assert a.num_output == 2


def test_abort_frees_kv_and_queue_slots() -> None:
    engine = model(max_num_seqs=1)
    engine.add(req("run", prompt=12, target=50), 0.0)
    engine.add(req("wait", prompt=4, target=5), 0.0)
    engine.step(0.0)
    assert engine.kv_usage > 0
    assert engine.num_running == 1
    assert engine.num_waiting == 1
    assert engine.abort("run", 1.0)
    assert engine.kv_usage == 0.0
    assert engine.num_running == 0
    assert engine.abort("wait", 1.0)
    assert not engine.has_work
    assert not engine.abort("wait", 1.0)
    assert not engine.abort("never-seen", 1.0)
    engine.add(req("run", prompt=4, target=1), 2.0)  # the id is free again
    assert run(engine, 2.0)[-1][2] == ["run"]


def test_add_rejects_what_can_never_run() -> None:
    engine = model(kv_capacity_tokens=16)
    engine.add(req("a", prompt=4, target=1), 0.0)
    with pytest.raises(ValueError, match="already"):
        engine.add(req("a", prompt=4, target=1), 0.0)
    with pytest.raises(ValueError, match="KV"):
        engine.add(req("huge", prompt=10, target=None, max_tokens=8), 0.0)
    with pytest.raises(ValueError, match="prompt"):
        engine.add(req("empty", prompt=0, target=1), 0.0)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        EngineModel(max_num_seqs=16, max_num_batched_tokens=8)


Trace = list[tuple[float, tuple[str, ...], tuple[str, ...]]]


def workload(engine: EngineModel) -> Trace:
    trace: Trace = []
    now = 0.0
    for i in range(40):
        engine.add(req(f"r{i}", prompt=3 + 7 * i % 23, target=1 + 5 * i % 17, priority=i % 3), now)
        result = engine.step(now)
        now = result.end
        trace.append((result.duration, tuple(r.id for r in result.emitted), ()))
    while engine.has_work:
        result = engine.step(now)
        now = result.end
        trace.append(
            (
                result.duration,
                tuple(r.id for r in result.emitted),
                tuple(r.id for r in result.preempted),
            )
        )
    return trace


def test_deterministic() -> None:
    def make() -> EngineModel:
        return model(kv_capacity_tokens=48, max_num_seqs=3, queue=PriorityQueue())

    assert workload(make()) == workload(make())


@settings(max_examples=60, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(
            st.integers(1, 40),  # prompt
            st.integers(1, 30),  # target
            st.integers(1, 30),  # max tokens
            st.integers(0, 3),  # priority
            st.integers(0, 5),  # steps until the next arrival
        ),
        min_size=1,
        max_size=25,
    ),
    policy=st.sampled_from(["fcfs", "priority"]),
    seqs=st.integers(1, 5),
    chunked=st.booleans(),
)
def test_invariants_hold_on_random_workloads(
    jobs: list[tuple[int, int, int, int, int]], policy: str, seqs: int, chunked: bool
) -> None:
    engine = model(
        kv_capacity_tokens=80,
        max_num_seqs=seqs,
        max_num_batched_tokens=16,
        queue=make_queue(policy),  # type: ignore[arg-type]
        chunked_prefill=chunked,
    )
    requests: list[EngineRequest] = []
    now = 0.0
    pending = list(jobs)
    emitted: dict[str, int] = {}
    while pending or engine.has_work:
        if pending:
            prompt, target, max_tokens, priority, gap = pending.pop(0)
            r = req(f"r{len(requests)}", prompt, target, max_tokens=max_tokens, priority=priority)
            r.arrival = now
            engine.add(r, now)
            requests.append(r)
        for _ in range(gap if pending else 1):
            result = engine.step(now)
            now = result.end
            if chunked:
                assert result.num_prefill_tokens + result.num_decodes <= 16
            else:  # a step prefills or decodes; only a prompt over the budget runs alone
                assert not (result.num_prefill_tokens and result.num_decodes)
                assert result.num_prefill_tokens <= 16 or len(result.emitted) <= 1
            assert engine.num_running <= seqs
            held = sum(r.num_blocks for r in engine.running)
            assert held == round(engine.kv_usage * engine.num_blocks)
            for r in result.emitted:
                emitted[r.id] = emitted.get(r.id, 0) + 1
    for r in requests:
        assert r.status is RequestStatus.FINISHED
        assert r.num_output == emitted[r.id] == min(r.target_tokens or 0, r.max_tokens)
        assert r.finish_reason == ("stop" if r.target_tokens < r.max_tokens else "length")  # type: ignore[operator]
    assert engine.kv_usage == 0.0
