"""The process table: call lifecycle, service and wait accounting, forgetting programs."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from proxy.ids import IdGen
from proxy.records import Call, CallState, Program
from proxy.table import ProcessTable, TableConfig

DECODE = 0.02
PREFILL = 0.001


def make(**kw: Any) -> ProcessTable:
    defaults: dict[str, Any] = {"decode_token_s": DECODE, "prefill_token_s": PREFILL}
    return ProcessTable(TableConfig(**{**defaults, **kw}), ids=IdGen("x"))


def run(table: ProcessTable, program_id: str, now: float) -> Call:
    """A call that starts at once and completes one time unit later."""
    _, call = table.begin(program_id, now=now)
    table.start(call, "e0", now)
    table.tokens(call, 1, now + 1)
    table.finish(call, now + 1)
    return call


def test_begin_creates_and_reuses_programs() -> None:
    table = make()
    program, call = table.begin(
        "p", now=1.0, tenant="t", source="session", thread="th", parents=("c0",), prompt_tokens=50
    )
    assert (program.id, program.tenant, program.identified_by, program.created) == (
        "p",
        "t",
        "session",
        1.0,
    )
    assert (call.id, call.program_id, call.thread, call.parents, call.prompt_tokens) == (
        "call-x1",
        "p",
        "th",
        ("c0",),
        50,
    )
    assert (call.state, call.queued_since, call.arrival) == (CallState.QUEUED, 1.0, 1.0)
    assert program.active == {call.id: call}
    again, second = table.begin("p", now=2.0, tenant="ignored", source="inferred")
    assert again is program
    assert (program.calls, program.last_arrival, program.tenant) == (2, 2.0, "t")
    assert set(program.active) == {call.id, second.id}
    assert len(table) == 1
    assert "p" in table
    assert table.get("p") is program
    assert table.get("q") is None
    assert list(table) == [program]


def test_wait_accounting_and_affinity() -> None:
    table = make()
    program, call = table.begin("p", now=0.0)
    table.start(call, "e1", 2.0)
    assert (call.wait, call.queued_since, call.state, call.started_at) == (
        2.0,
        None,
        CallState.RUNNING,
        2.0,
    )
    assert (call.engine, program.engine) == ("e1", "e1")
    table.preempt(call, 5.0)
    assert (call.state, call.queued_since) == (CallState.PREEMPTED, 5.0)
    table.start(call, "e2", 7.0)
    assert (call.wait, call.started_at, program.engine) == (4.0, 2.0, "e2")
    table.finish(call, 9.0)
    assert (program.wait, program.last_completion, call.finished_at) == (4.0, 9.0, 9.0)


def test_finish_while_queued_counts_the_wait() -> None:
    table = make()
    program, call = table.begin("p", now=1.0)
    table.finish(call, 4.0, ok=False)
    assert (call.state, call.wait, program.wait, call.service) == (CallState.FAILED, 3.0, 3.0, 0.0)


def test_tokens_cost_service() -> None:
    table = make()
    program, call = table.begin("p", now=0.0, prompt_tokens=400)
    table.start(call, "e", 0.0)
    assert call.service == 0.0  # no prefill charged before the engine did it
    table.tokens(call, 1, 0.5)
    assert call.service == pytest.approx(400 * PREFILL + DECODE)
    table.tokens(call, 9, 0.7)
    assert call.completion_tokens == 10
    assert call.service == pytest.approx(400 * PREFILL + 10 * DECODE)
    table.finish(call, 1.0, prompt_tokens=420, completion_tokens=12)
    assert call.service == pytest.approx(420 * PREFILL + 12 * DECODE)
    assert (program.prompt_tokens, program.completion_tokens) == (420, 12)
    assert program.service == 0.0  # the policy's to update (see on_finish)


def test_prefill_only_calls() -> None:
    table = make()
    _, ok = table.begin("p", now=0.0, prompt_tokens=100)
    table.finish(ok, 1.0)
    assert ok.service == pytest.approx(100 * PREFILL)
    _, failed = table.begin("p", now=0.0, prompt_tokens=100)
    table.start(failed, "e", 0.0)
    table.finish(failed, 1.0, ok=False)
    assert failed.service == 0.0


def test_tokens_without_start_stop_the_wait() -> None:
    table = make()
    _, call = table.begin("p", now=0.0)
    table.tokens(call, 2, 3.0)
    assert (call.state, call.wait, call.queued_since) == (CallState.RUNNING, 3.0, None)


def test_wall_service_excludes_preemption() -> None:
    table = make(service_unit="wall")
    _, call = table.begin("p", now=0.0, prompt_tokens=1000)
    table.start(call, "e", 0.0)
    table.tokens(call, 1, 1.0)  # first token: time before it is prefill and queueing
    table.tokens(call, 1, 1.5)
    table.tokens(call, 3, 3.0)
    assert call.service == pytest.approx(2.0)
    table.preempt(call, 3.5)
    table.start(call, "e", 10.0)
    table.tokens(call, 1, 11.0)  # first token after resuming
    table.tokens(call, 1, 11.25)
    assert call.service == pytest.approx(2.25)
    table.finish(call, 12.0, prompt_tokens=1000, completion_tokens=7)
    assert call.service == pytest.approx(2.25)
    assert call.completion_tokens == 7


def test_on_finish_hook_sees_the_finished_call() -> None:
    seen: list[tuple[str, int, float]] = []

    def plas(call: Call, program: Program, now: float) -> None:
        assert call.id not in program.active
        seen.append((call.id, len(program.active), now))
        program.service = max(program.service, call.start_service + call.service)

    table = ProcessTable(TableConfig(decode_token_s=1.0), on_finish=plas)
    program, a = table.begin("p", now=0.0)
    _, b = table.begin("p", now=0.0)
    for call, n in ((a, 3), (b, 5)):
        table.start(call, "e", 0.0)
        table.tokens(call, n, 1.0)
    table.finish(a, 2.0)
    table.finish(b, 3.0)
    assert seen == [(a.id, 1, 2.0), (b.id, 0, 3.0)]
    assert program.service == 5.0


def test_finish_is_idempotent() -> None:
    table = make()
    program, call = table.begin("p", now=0.0, end=True)
    assert table.finish(call, 1.0) is True
    assert table.finish(call, 2.0) is False
    table.tokens(call, 5, 2.0)
    table.start(call, "e", 2.0)
    table.preempt(call, 2.0)
    assert (call.completion_tokens, call.state, program.calls) == (0, CallState.DONE, 1)
    assert table.released == 1


def test_end_releases_after_the_last_active_call() -> None:
    table = make()
    _, sibling = table.begin("p", now=0.0)
    program, last = table.begin("p", now=1.0, end=True)
    assert program.ending
    assert table.finish(last, 2.0) is False  # a sibling still runs
    assert "p" in table
    assert table.finish(sibling, 3.0) is True
    assert "p" not in table
    assert table.idle == 0
    # A later call with the same id starts afresh.
    fresh, _ = table.begin("p", now=4.0)
    assert fresh is not program
    assert fresh.calls == 1


def test_an_idle_program_holds_an_empty_dict_of_active_calls_at_its_smallest() -> None:
    table = make()
    program, first = table.begin("p", now=0.0)
    _, second = table.begin("p", now=0.5)
    table.finish(first, 1.0)
    assert list(program.active) == [second.id]  # still busy: the same calls, still there
    table.finish(second, 2.0)
    assert program.active == {}
    assert sys.getsizeof(program.active) == sys.getsizeof({})
    _, third = table.begin("p", now=3.0)  # and it takes calls again
    assert list(program.active) == [third.id]


def test_collect_idle_programs_after_ttl() -> None:
    table = make(idle_ttl_s=10.0)
    run(table, "a", 0.0)  # idle from 1
    run(table, "b", 2.0)  # idle from 3
    _, busy = table.begin("c", now=0.0)  # active: never collected
    run(table, "d", 4.0)  # idle from 5 ...
    table.begin("d", now=6.0)  # ... but active again
    assert table.collect(10.9) == 0
    assert table.collect(11.0) == 1
    assert set(p.id for p in table) == {"b", "c", "d"}
    assert table.collect(100.0) == 1
    assert set(p.id for p in table) == {"c", "d"}
    table.finish(busy, 100.0)
    assert table.collect(109.0) == 0
    assert table.collect(110.0) == 1
    assert table.collected == 3


def test_reactivated_program_moves_to_the_back() -> None:
    table = make(idle_ttl_s=10.0)
    run(table, "a", 0.0)
    run(table, "b", 1.0)
    run(table, "a", 5.0)  # a idle again from 6
    assert table.collect(12.0) == 1
    assert set(p.id for p in table) == {"a"}


def test_full_table_evicts_least_recently_active_idle() -> None:
    table = make(max_programs=3)
    run(table, "a", 0.0)
    run(table, "b", 1.0)
    run(table, "a", 2.0)
    table.begin("c", now=3.0)
    table.begin("d", now=4.0)  # full: b is the oldest idle one
    assert set(p.id for p in table) == {"a", "c", "d"}
    assert table.evicted == 1
    table.begin("a", now=5.0)
    table.begin("e", now=6.0)  # full and nothing idle: accepted anyway
    assert len(table) == 4
    assert table.overflows == 1


def test_delete() -> None:
    table = make()
    run(table, "idle", 0.0)
    program, call = table.begin("busy", now=0.0)
    assert table.delete("idle") == "deleted"
    assert table.idle == 0
    assert table.delete("busy") == "ending"
    assert program.ending
    assert "busy" in table
    assert table.finish(call, 1.0) is True
    assert table.delete("busy") is None
    assert len(table) == 0
    assert table.released == 2


def test_page() -> None:
    table = make(decode_token_s=1.0)
    service = {"a": 5, "b": 1, "c": 3, "d": 3}
    for i, (pid, n) in enumerate(service.items()):
        for k in range(i + 1):
            call = run(table, pid, float(10 * i + k))
            program = table.get(pid)
            assert program is not None
            program.service += n / (i + 1)
            assert call.state is CallState.DONE

    def ids(**kw: Any) -> list[str]:
        return [p.id for p in table.page(**kw)]

    assert ids() == ["d", "c", "b", "a"]  # last arrival, newest first
    assert ids(sort="service") == ["a", "d", "c", "b"]  # ties by id
    assert ids(sort="service", descending=False) == ["b", "c", "d", "a"]
    assert ids(sort="calls", descending=False, offset=1, limit=2) == ["b", "c"]
    assert ids(offset=4) == []
    assert ids(limit=1) == ["d"]


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="max_programs"):
        ProcessTable(TableConfig(max_programs=0))
