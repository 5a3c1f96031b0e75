"""The steps of serving one call, each driven with fakes: no engine, no HTTP server.

The gate, the scheduler, the engine's backend, the upstream response and the stream relay are
small recording stand-ins (``tests/call_fakes.py``); the pool, the metrics and the records are
the real (pure) ones.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web

from proxy.backends.openai import OpenAIBackend
from proxy.backends.vllm import VLLMBackend
from proxy.calls import (
    MAX_CONNECT_TRIES,
    Attempts,
    account,
    connect,
    engine_busy,
    engine_slot,
    may_fail_over,
    observe,
    relay_answer,
    report_service,
    resume_later,
    serve_call,
)
from proxy.config import EngineConfig
from proxy.errors import BadGateway, ServiceUnavailable
from proxy.gate import Ticket
from proxy.intercept.usage import Usage
from proxy.kvhints.balancers import AutellixBalancer
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.pool import EngineState
from proxy.kvhints.router import Router
from proxy.metrics import Metrics
from proxy.policies.base import Priority
from proxy.records import Call, Program
from proxy.resume import Continuation
from tests.call_fakes import (
    ANSWER,
    CHAT,
    FakeGate,
    FakeRelay,
    FakeSession,
    FakeUpstream,
    engine,
    make_ctx,
    sample,
    ticket_of,
)

# 1. acquire ---------------------------------------------------------------------------------


async def test_a_slot_is_given_back_however_the_attempt_ends() -> None:
    e1, e2 = engine("e1"), engine("e2")
    gate = FakeGate(e1, e2)
    ticket = Ticket(
        call=Call(id="c", program_id="p", arrival=0.0), program=Program("p", 0.0), model="m"
    )
    async with engine_slot(gate, ticket) as granted:
        assert granted is e1
    with pytest.raises(RuntimeError):
        async with engine_slot(gate, ticket):
            raise RuntimeError("the relay failed")
    assert gate.log == ["acquire e1", "release", "acquire e2", "release"]


async def test_a_slot_never_granted_is_not_given_back() -> None:
    gate = FakeGate(error=ServiceUnavailable("no engine"))
    ticket = Ticket(
        call=Call(id="c", program_id="p", arrival=0.0), program=Program("p", 0.0), model="m"
    )
    with pytest.raises(ServiceUnavailable):
        async with engine_slot(gate, ticket):
            pass
    assert gate.log == []


# 2. open upstream with failover -------------------------------------------------------------


def test_an_unreachable_engine_is_marked_failed_and_another_tried() -> None:
    e1, e2 = engine("e1"), engine("e2")
    ctx = make_ctx(e1, e2)
    pool, metrics = ctx.state.pool, ctx.state.metrics
    err = BadGateway("e1 is unreachable", code="engine_unreachable")
    assert may_fail_over(pool, metrics, e1, err, tries=1, model="m")
    assert not e1.healthy
    assert e1.last_error == "e1 is unreachable"
    assert sample(ctx, "autellix_engine_healthy", engine="e1") == 0
    # The last healthy engine gone: no failover, the error stands.
    assert not may_fail_over(pool, metrics, e2, err, tries=2, model="m")
    assert not e2.healthy


@pytest.mark.parametrize(
    ("code", "tries"), [("engine_error", 1), ("engine_unreachable", MAX_CONNECT_TRIES)]
)
def test_no_failover_once_the_engine_saw_the_call_or_the_tries_are_spent(
    code: str, tries: int
) -> None:
    e1, e2 = engine("e1"), engine("e2")
    ctx = make_ctx(e1, e2)
    err = BadGateway("broke", code=code)
    assert not may_fail_over(ctx.state.pool, ctx.state.metrics, e1, err, tries=tries, model="m")
    assert e1.healthy  # not marked: the engine may well be fine


async def test_connect_sends_the_attempts_body_under_the_segments_request_id() -> None:
    e1 = engine("e1")
    upstream = FakeUpstream()
    session = FakeSession(e1=upstream)
    ctx = make_ctx(e1, session=session)
    run = Attempts(body={"model": "m", "messages": []}, segment=2)
    assert await connect(ctx, e1, run) is upstream
    (request,) = session.sent
    assert (request["method"], request["url"]) == ("POST", "http://e1/v1/chat/completions")
    assert orjson.loads(request["data"])["request_id"] == "req-1-r2"
    assert request["headers"]["X-Request-Id"] == "req-1-r2"
    assert ctx.headers["X-Autellix-Engine"] == "e1"
    assert ctx.state.scheduler.events == [("started", "e1")]  # type: ignore[attr-defined]


async def test_connect_answers_none_to_fail_over_and_raises_when_it_cannot() -> None:
    e1, e2 = engine("e1"), engine("e2")
    refused = ConnectionRefusedError(111, "refused")
    ctx = make_ctx(e1, e2, session=FakeSession(e1=refused, e2=refused))
    run = Attempts(body=dict(CHAT))
    assert await connect(ctx, e1, run) is None
    assert run.tries == 1
    assert not e1.healthy
    with pytest.raises(BadGateway, match="e2"):  # e2 was the last engine standing
        await connect(ctx, e2, run)
    assert run.tries == 2


async def test_the_engine_counts_the_call_only_while_it_works_on_it() -> None:
    e1 = engine("e1")
    metrics = Metrics()
    seen: list[int] = []

    async def work() -> None:
        with engine_busy(metrics, e1):
            seen.append(e1.inflight)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await work()
    assert seen == [1]
    assert e1.inflight == 0
    assert metrics.registry.get_sample_value("autellix_inflight_calls", {"engine": "e1"}) == 0


# 3. relay ---------------------------------------------------------------------------------


async def test_a_whole_answer_is_relayed_and_read_for_usage() -> None:
    ctx = make_ctx(engine("e1"))
    run = Attempts(body=ctx.body)
    answered = await relay_answer(
        ctx,
        FakeUpstream(),
        None,
        ticket_of(ctx),
        run,
        preemptible=False,  # type: ignore[arg-type]
    )
    assert answered
    assert isinstance(run.response, web.Response)
    assert run.response.status == 200
    assert run.response.body == orjson.dumps(ANSWER)
    assert run.outcome.reply.usage == Usage(prompt_tokens=7, completion_tokens=2)


async def test_a_streamed_segment_offers_the_slot_for_preemption_only_if_resumable() -> None:
    ctx = make_ctx(engine("e1"), stream=True)
    relay, ticket = FakeRelay(True), ticket_of(ctx)
    run = Attempts(body=ctx.body)
    assert await relay_answer(ctx, FakeUpstream(), relay, ticket, run, preemptible=True)  # type: ignore[arg-type]
    assert ticket.preemptible
    assert ticket.on_preempt == relay.cut
    assert relay.whole_events  # a segment that may be cut is relayed in whole events
    assert run.response is relay.response
    cut, ticket = FakeRelay(False), ticket_of(ctx)
    run = Attempts(body=ctx.body)
    assert not await relay_answer(ctx, FakeUpstream(), cut, ticket, run, preemptible=False)  # type: ignore[arg-type]
    assert not ticket.preemptible
    assert cut.whole_events is False  # nothing can cut it: its reads go on as they came
    assert run.response is None  # no answer yet: the call goes round again


async def test_a_failed_continuation_ends_the_open_stream_with_the_engines_words() -> None:
    ctx = make_ctx(engine("e1"), stream=True)
    relay = FakeRelay(opened=True)
    run = Attempts(body=ctx.body)
    upstream = FakeUpstream(status=400, body=b"continue_final_message is not supported")
    assert await relay_answer(ctx, upstream, relay, ticket_of(ctx), run, preemptible=True)  # type: ignore[arg-type]
    (err,) = relay.failed
    assert "400 continue_final_message is not supported" in str(err)
    assert run.outcome.upstream_failed
    assert run.response is relay.response


# 4. preempt / resume ------------------------------------------------------------------------


async def test_a_preempted_segment_is_aborted_and_the_rest_asked_for() -> None:
    e1 = engine("e1")
    ctx = make_ctx(e1, stream=True)
    relay = FakeRelay(opened=True)
    relay.tokens = 3
    run = Attempts(body=ctx.body)
    run.outcome.reply.id, run.outcome.reply.created = "chatcmpl-9", 1700
    run.outcome.reply.content.append(" one two three")
    resume_later(ctx, e1, relay, run)  # type: ignore[arg-type]
    await asyncio.gather(*ctx.state.tasks)
    assert e1.backend.aborted == ["req-1"]  # type: ignore[attr-defined]
    assert run.segment == 1
    assert run.request_id("req-1") == "req-1-r1"
    assert run.body["messages"][-1] == {"role": "assistant", "content": " one two three"}
    assert run.body["continue_final_message"] is True
    assert relay.watcher.rewrite == Continuation("chatcmpl-9", 1700, 3)
    assert ctx.state.scheduler.events == [("preempted",)]  # type: ignore[attr-defined]
    assert sample(ctx, "autellix_preemptions_total", engine="e1") == 1
    assert sample(ctx, "autellix_resumes_total") == 1


async def test_a_call_cut_before_its_first_event_starts_over() -> None:
    e1 = engine("e1")
    ctx = make_ctx(e1, stream=True)
    run = Attempts(body=ctx.body)
    resume_later(ctx, e1, FakeRelay(), run)  # type: ignore[arg-type]
    await asyncio.gather(*ctx.state.tasks)
    assert run.body == CHAT
    assert run.segment == 1


# 5. account -------------------------------------------------------------------------------


def test_an_answered_call_is_accounted_with_its_usage_and_reply() -> None:
    ctx = make_ctx(engine("e1"))
    run = Attempts(body=ctx.body, ok=True, segment=2, engine=ctx.state.pool.engines["e1"])
    run.outcome.reply.absorb_body(orjson.dumps(ANSWER))
    run.outcome.status, run.outcome.first_byte_at = 200, 0.25
    account(ctx, run)
    observe(ctx, run)
    ((kind, outcome),) = ctx.state.scheduler.events  # type: ignore[attr-defined]
    assert kind == "finish"
    assert outcome == {
        "ok": True,
        "usage": (7, 2),
        "reply": {"role": "assistant", "content": "hello"},
        "preemptions": 2,
    }
    assert sample(ctx, "autellix_tokens_total", engine="e1", kind="completion") == 2
    # A whole answer's first byte is its last: time to first token is for streamed calls.
    assert not sample(ctx, "autellix_time_to_first_token_seconds_count", route=ctx.route)
    # The program's waiting calls are ranked again once it has its new service.
    assert ctx.state.gate.log[-1] == f"program_changed {ctx.program.id}"  # type: ignore[attr-defined]


def test_time_to_first_token_is_observed_for_streamed_calls() -> None:
    ctx = make_ctx(engine("e1"), stream=True)
    run = Attempts(body=ctx.body, ok=True, engine=ctx.state.pool.engines["e1"])
    run.outcome.status, run.outcome.first_byte_at = 200, 0.25
    observe(ctx, run)
    assert sample(ctx, "autellix_time_to_first_token_seconds_count", route=ctx.route) == 1


def test_a_failed_call_teaches_no_reply() -> None:
    ctx = make_ctx(engine("e1"))
    run = Attempts(body=ctx.body)
    run.outcome.reply.absorb_body(orjson.dumps(ANSWER))
    account(ctx, run)
    ((_, outcome),) = ctx.state.scheduler.events  # type: ignore[attr-defined]
    assert outcome["ok"] is False
    assert outcome["reply"] is None
    assert outcome["usage"] == (7, 2)


# The steps together -------------------------------------------------------------------------


async def test_serve_call_fails_over_then_answers_choosing_no_engine_itself() -> None:
    e1, e2 = engine("e1"), engine("e2")
    session = FakeSession(e1=ConnectionRefusedError(111, "refused"), e2=FakeUpstream())
    ctx = make_ctx(e1, e2, session=session)
    response = await serve_call(ctx)
    assert response.status == 200
    assert [sent["engine"] for sent in session.sent] == ["e1", "e2"]
    assert ctx.state.gate.log == [  # type: ignore[attr-defined]
        "acquire e1",
        "release",
        "acquire e2",
        "release",
        f"program_changed {ctx.program.id}",
        "forget",  # the ticket's place in the core is dropped once the call is over
    ]
    events = ctx.state.scheduler.events  # type: ignore[attr-defined]
    assert events[:2] == [("started", "e1"), ("started", "e2")]
    assert events[2][1]["ok"] is True
    assert events[2][1]["usage"] == (7, 2)
    assert e2.inflight == 0


async def test_a_whole_answer_is_sent_before_the_calls_bookkeeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = make_ctx(engine("e1"), session=FakeSession(e1=FakeUpstream()))
    log = ctx.state.gate.log  # type: ignore[attr-defined]
    write_eof = web.Response.write_eof

    async def sending(self: web.Response, data: bytes = b"") -> None:
        log.append("answer sent")
        await write_eof(self, data)

    monkeypatch.setattr(web.Response, "write_eof", sending)
    response = await serve_call(ctx)
    assert response.status == 200
    assert response.prepared
    # The client has its answer before the slot goes back and the program is accounted.
    assert log == ["acquire e1", "answer sent", "release", "program_changed p1", "forget"]
    assert ctx.state.scheduler.events[-1][1]["usage"] == (7, 2)  # type: ignore[attr-defined]


async def test_serve_call_lets_an_error_before_any_byte_reach_the_error_edge() -> None:
    ctx = make_ctx(engine("e1"), gate=FakeGate(error=ServiceUnavailable("no engine")))
    with pytest.raises(ServiceUnavailable):
        await serve_call(ctx)
    ((kind, outcome),) = ctx.state.scheduler.events  # type: ignore[attr-defined]
    assert kind == "finish"
    assert outcome["ok"] is False
    assert outcome["preemptions"] == 0


class BlocksGate(FakeGate):
    """Records the prompt blocks each ticket carries to the gate (what the router sees)."""

    def __init__(self, *engines: EngineState) -> None:
        super().__init__(*engines)
        self.router = Router(AutellixBalancer(), index=PrefixIndex())
        self.blocks: list[tuple[int, ...]] = []

    async def acquire(self, ticket: Ticket) -> EngineState:
        self.blocks.append(ticket.blocks)
        return await super().acquire(ticket)


LONG_PROMPT = {"model": "m", "messages": [{"role": "user", "content": "tell me more " * 40}]}


async def test_the_prompt_is_hashed_into_blocks_only_where_an_engine_is_to_be_chosen() -> None:
    e1, e2 = engine("e1"), engine("e2")
    several = BlocksGate(e1, e2)
    ctx = make_ctx(e1, e2, gate=several, session=FakeSession(e1=FakeUpstream()))
    ctx.body = dict(LONG_PROMPT)
    await serve_call(ctx)
    assert several.blocks[0]  # two engines: the router chooses by the blocks each holds

    alone = engine("e1")
    one = BlocksGate(alone)
    ctx = make_ctx(alone, gate=one, session=FakeSession(e1=FakeUpstream()))
    ctx.body = dict(LONG_PROMPT)
    await serve_call(ctx)
    assert one.blocks == [()]  # one engine, nothing to learn: nothing reads them


async def test_hints_reach_a_dialect_that_reads_them_and_the_generic_one_sends_the_bytes() -> None:
    config = EngineConfig(name="v", url="http://v", kind="vllm", models=["m"], priority=True)
    vllm = EngineState(VLLMBackend(config), models=frozenset({"m"}))
    session = FakeSession(v=FakeUpstream())
    ctx = make_ctx(vllm, session=session)
    ctx.call.level = 3
    await connect(ctx, vllm, Attempts(body=ctx.body))
    assert "priority" in orjson.loads(session.sent[0]["data"])  # the call's level, as vLLM's

    config = EngineConfig(name="o", url="http://o", kind="openai", models=["m"])
    generic = EngineState(OpenAIBackend(config), models=frozenset({"m"}))
    session = FakeSession(o=FakeUpstream())
    ctx = make_ctx(generic, session=session)
    ctx.raw = orjson.dumps(ctx.body)
    await connect(ctx, generic, Attempts(body=ctx.body))
    assert session.sent[0]["data"] is ctx.raw  # nothing added: the client's bytes go on


def test_every_service_the_policy_heard_reaches_the_gate_even_at_the_same_priority() -> None:
    ctx = make_ctx(engine("e1"), stream=True)
    gate, scheduler = ctx.state.gate, ctx.state.scheduler
    ticket = ticket_of(ctx)
    report_service(ctx, ticket, 3)  # the policy was not asked (its slack): nothing to tell
    assert gate.log == []  # type: ignore[attr-defined]
    scheduler.priority = Priority(2)  # type: ignore[attr-defined]
    report_service(ctx, ticket, 3)
    # The same priority again: the records behind it moved all the same.
    report_service(ctx, ticket, 3)
    assert gate.log == ["reprioritized 2", "reprioritized 2"]  # type: ignore[attr-defined]
