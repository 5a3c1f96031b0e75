"""Serving one generation call: through the gate to an engine, relayed back, preempted and
resumed as the gate decides, and accounted in the process table whatever happens.

``serve_call`` runs the steps in turn, once per attempt (a failover to another engine, or a
resumption after a preemption, is a new attempt):

1. ``engine_slot``: acquire a slot from the gate (the gate chooses the engine), given back
   however the attempt ends;
2. ``connect``: open the upstream request, or mark the engine failed and let the call try
   another (``may_fail_over``);
3. ``relay_answer``: relay the engine's answer to the client;
4. ``resume_later``: the gate cut the stream: abort the engine's request and prepare the body
   that resumes the answer where the client's stream stopped;
5. ``account``: the process table (and so the policy) learns how the call ended, and
   ``observe`` updates the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from proxy import accesslog
from proxy.backends.base import CallHints
from proxy.backends.openai import OpenAIBackend
from proxy.errors import BadGateway, GatewayTimeout, ProxyError
from proxy.faults import retry_elsewhere, settle
from proxy.gate import Ticket
from proxy.intercept.identify import Identity
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.metrics import Metrics
from proxy.records import Call, Program
from proxy.relay import Outcome, StreamRelay, engine_deadline, open_upstream, relay_whole
from proxy.resume import Continuation, continuation_body, resumable
from proxy.state import ProxyState

# Client headers worth passing on to an engine besides the ones the proxy sets itself.
FORWARD_HEADERS = ("Accept", "Accept-Language", "traceparent", "tracestate", "OpenAI-Organization")
# How many engines a call may try when the chosen one turns out to be unreachable.
MAX_CONNECT_TRIES = 3


@dataclass(slots=True)
class CallContext:
    request: web.Request
    state: ProxyState
    route: str
    chat: bool
    stream: bool
    model: str
    body: dict[str, Any]
    identity: Identity
    program: Program
    call: Call
    request_id: str
    headers: dict[str, str]
    drop_usage: bool
    arrived: float  # perf_counter() when the request reached the proxy
    # The bytes of ``body`` where the proxy has them without encoding it: the client's own,
    # or those with usage asked for spliced in (``ask_usage``).
    raw: bytes | None = None


def upstream_headers(
    request: web.Request, state: ProxyState, engine: EngineState, request_id: str
) -> dict[str, str]:
    # One case-insensitive look-up per header (``get``), not two (``in`` and ``[]``).
    get = request.headers.get
    headers = {h: v for h in FORWARD_HEADERS if (v := get(h)) is not None}
    client_auth = get("Authorization") if state.config.forward_client_auth else None
    headers.update(engine.backend.auth_headers(client_auth))
    headers["X-Request-Id"] = request_id
    # The proxy reads usage from the answer on its way through, so it must not be compressed.
    headers["Accept-Encoding"] = "identity"
    headers["Content-Type"] = "application/json"
    return headers


def _hints(ctx: CallContext) -> CallHints:
    return CallHints(
        level=ctx.call.level,
        program_id=ctx.program.id,
        call_id=ctx.call.id,
        thread=ctx.call.thread,
        service=ctx.call.start_service,
    )


async def _abort_quietly(ctx: CallContext, engine: EngineState, request_id: str) -> None:
    """Closing the connection already makes vLLM and SGLang abort; an explicit abort also
    covers engines that notice a closed connection late."""
    if engine.backend.capabilities.abort:
        with contextlib.suppress(Exception):
            await engine.backend.abort(ctx.state.client(), request_id)


@dataclass(slots=True)
class Attempts:
    """What a call has done so far, over its attempts: the body the next one sends, how the
    last one ended, and the answer once there is one."""

    body: dict[str, Any]
    outcome: Outcome = field(default_factory=Outcome)
    segment: int = 0  # resumptions so far (each after a preemption)
    tries: int = 0  # connections that failed
    engine: EngineState | None = None  # the engine of the latest attempt
    response: web.StreamResponse | None = None
    ok: bool = False

    def request_id(self, first: str) -> str:
        """Each segment of a resumed call is a new request at the engine, with its own id."""
        return first if self.segment == 0 else f"{first}-r{self.segment}"


class Slots(Protocol):
    """The part of the gate a call's attempts use."""

    async def acquire(self, ticket: Ticket) -> EngineState: ...

    def release(self, ticket: Ticket) -> None: ...


class engine_slot:  # named as the step it is: ``async with engine_slot(gate, ticket)``
    """Step 1: a slot on an engine, held for one attempt and given back however it ends.
    (A class rather than ``asynccontextmanager``: it runs for every call, where a generator
    and its wrapper per use show in the profile.)"""

    __slots__ = ("gate", "ticket")

    def __init__(self, gate: Slots, ticket: Ticket) -> None:
        self.gate = gate
        self.ticket = ticket

    async def __aenter__(self) -> EngineState:
        return await self.gate.acquire(self.ticket)

    async def __aexit__(self, *exc: object) -> None:
        self.gate.release(self.ticket)


def may_fail_over(
    pool: EnginePool,
    metrics: Metrics,
    engine: EngineState,
    err: ProxyError,
    *,
    tries: int,
    model: str | None,
) -> bool:
    """After ``engine`` could not be reached on try number ``tries``: may the call try
    another engine? Only if nothing reached the engine, the tries are not spent and a healthy
    engine for ``model`` is left; the unreachable engine is marked failed, so the gate does
    not grant it again until a health check passes."""
    if err.code != "engine_unreachable" or tries >= MAX_CONNECT_TRIES:
        return False
    pool.mark_failed(engine, err.message)
    metrics.engine_healthy.labels(engine.name).set(0)
    return pool.healthy_for(model)


async def connect(
    ctx: CallContext, engine: EngineState, run: Attempts
) -> aiohttp.ClientResponse | None:
    """Step 2: send this attempt's body to ``engine``. None when it could not be reached and
    the call may try another engine; the error when it may not."""
    state = ctx.state
    rid = run.request_id(ctx.request_id)
    ctx.headers["X-Autellix-Engine"] = engine.name
    state.scheduler.started(ctx.call, engine.name)
    backend = engine.backend
    # The generic dialect's ``prepare_body`` adds nothing: no hints to build for it.
    generic = type(backend).prepare_body is OpenAIBackend.prepare_body
    prepared = backend.prepare_body(
        run.body, request_id=rid, hints=None if generic else _hints(ctx)
    )
    # A body the proxy left as the client sent it goes on as its bytes, not re-encoded.
    data = ctx.raw if prepared is ctx.body and ctx.raw else orjson.dumps(prepared)
    run.outcome.deadline = engine_deadline(engine)
    try:
        return await open_upstream(
            state.client(), engine, "POST", ctx.request.path, data=data,
            headers=upstream_headers(ctx.request, state, engine, rid),
            connect=state.upstream_timeout, metrics=state.metrics,
            alarms=state.alarms, deadline=run.outcome.deadline,
        )  # fmt: skip
    except (BadGateway, GatewayTimeout) as err:
        run.tries += 1
        if retry_elsewhere(
            err, engine, model=ctx.model, pool=state.pool, metrics=state.metrics, tries=run.tries
        ):
            return None  # failed before answering: once more, on another engine
        if may_fail_over(state.pool, state.metrics, engine, err, tries=run.tries, model=ctx.model):
            return None
        raise


class engine_busy:  # a step, like ``engine_slot``
    """Count the call at its engine while the engine works on it. (A plain ``with``: nothing
    here waits, and an ``async with`` costs two coroutines per call.)"""

    __slots__ = ("engine", "gauge")

    def __init__(self, metrics: Metrics, engine: EngineState) -> None:
        self.engine = engine
        self.gauge = metrics.engine(engine.name).inflight

    def __enter__(self) -> None:
        self.engine.inflight += 1
        self.gauge.value += 1

    def __exit__(self, *exc: object) -> None:
        self.engine.inflight -= 1
        self.gauge.value -= 1


async def relay_answer(
    ctx: CallContext,
    upstream: aiohttp.ClientResponse,
    relay: StreamRelay | None,
    ticket: Ticket,
    run: Attempts,
    *,
    preemptible: bool,
) -> bool:
    """Step 3: relay the engine's answer. True when the call has its answer
    (``run.response``), False when the gate cut the stream to preempt the call (which it
    may only if ``preemptible``: the call can be resumed on this engine)."""
    if relay is not None and upstream.status == 200:
        ticket.preemptible = preemptible
        ticket.on_preempt = relay.cut
        if not await relay.relay(
            upstream, run.outcome, run.engine, whole_events=ticket.preemptible
        ):
            return False
        run.response = relay.response
    elif relay is not None and relay.response is not None:
        # A continuation failed: the client's stream is open, end it there.
        text = (await upstream.read()).decode(errors="replace")[:500]
        await relay.fail(BadGateway(f"resuming the call failed: {upstream.status} {text}"))
        run.outcome.upstream_failed = True
        run.response = relay.response
    else:
        response = await relay_whole(
            ctx.request, upstream, ctx.headers, run.outcome, engine=run.engine, expect_json=True
        )
        run.response = response
        if run.engine is not None:
            settle(run.engine, run.outcome)
        # Sent now, not when the handler returns: the client has its answer before the
        # call's bookkeeping (the gate's release, the process table, what identification
        # learns from the reply), none of which changes it.
        await response.prepare(ctx.request)
        await response.write_eof()
    return True


def resume_later(ctx: CallContext, engine: EngineState, relay: StreamRelay, run: Attempts) -> None:
    """Step 4: the gate cut this segment. Count the preemption, abort the request at the
    engine, and make the next attempt's body: the answer so far as a final assistant message
    to continue, its stream rewritten to read as the rest of the same answer."""
    state = ctx.state
    state.metrics.preemptions.labels(engine.name).inc()
    accesslog.call_preempted(ctx, engine, relay.tokens)
    state.scheduler.preempted(ctx.call)
    state.spawn(_abort_quietly(ctx, engine, run.request_id(ctx.request_id)))
    reply = run.outcome.reply
    if relay.response is not None and reply.id is not None:
        relay.watcher.rewrite = Continuation(reply.id, reply.created, relay.tokens)
        run.body = continuation_body(ctx.body, chat=ctx.chat, text=reply.text, tokens=relay.tokens)
    run.segment += 1
    state.metrics.resumes.inc()


def account(ctx: CallContext, run: Attempts) -> None:
    """Step 5: the call ended, answered, failed or abandoned: the process table hands it to
    the policy with the usage the engine reported (none if it never said)."""
    usage = run.outcome.reply.usage
    ctx.state.scheduler.finish(
        ctx.call,
        ctx.identity,
        ok=run.ok,
        usage=None if usage is None else (usage.prompt_tokens, usage.completion_tokens),
        reply=run.outcome.reply.assistant_message() if run.ok and ctx.chat else None,
        preemptions=run.segment,
    )
    # The program's records changed: its (and, by the policy's scope, its tenant's) waiting
    # calls are ranked again.
    ctx.state.gate.program_changed(ctx.program)


def observe(ctx: CallContext, run: Attempts) -> None:
    """Time to first byte of an answered call, and the tokens its (last) engine reported."""
    metrics, outcome = ctx.state.metrics, run.outcome
    if ctx.stream and outcome.first_byte_at is not None and outcome.status == 200:
        metrics.ttft.labels(ctx.route).observe(outcome.first_byte_at - ctx.arrived)
    usage = outcome.reply.usage
    if usage is not None and run.engine is not None:
        meters = metrics.engine(run.engine.name)
        meters.prompt_tokens.value += usage.prompt_tokens
        meters.completion_tokens.value += usage.completion_tokens


async def serve_call(ctx: CallContext) -> web.StreamResponse:
    """Serve the call: attempts until one answers (the steps above), accounted however it
    ends. An error before the client got a byte goes to the error edge; after, it ends the
    client's open stream."""
    state = ctx.state
    # Prompt blocks serve the choice among engines and the learner of vLLM's hashes. With one
    # engine and no learner nothing reads them (the core grants the only engine without
    # asking the router), so the prompt is not hashed for them.
    routed = len(state.pool.engines) > 1 or state.learner is not None
    blocks = state.gate.router.blocks(ctx.body, chat=ctx.chat) if routed else ()
    ticket = Ticket(call=ctx.call, program=ctx.program, model=ctx.model, blocks=blocks)
    can_resume = ctx.state.config.gate.preempt and resumable(
        ctx.body, chat=ctx.chat, stream=ctx.stream
    )
    relay = None
    if ctx.stream:
        relay = StreamRelay(
            ctx.request,
            ctx.headers,
            drop_usage_chunk=ctx.drop_usage,
            whole_events=can_resume,  # never forward half an event that a preemption could cut
            on_tokens=lambda n: report_service(ctx, ticket, n),
        )
    run = Attempts(body=ctx.body)
    accesslog.call_arrived(ctx, run.outcome)
    try:
        while run.response is None:
            async with engine_slot(ctx.state.gate, ticket) as engine:
                run.engine = engine
                ctx.state.metrics.engine(engine.name).admissions.value += 1
                accesslog.call_admitted(ctx, engine)
                upstream = await connect(ctx, engine, run)
                if upstream is None:
                    continue  # nothing reached the engine: try another
                with engine_busy(ctx.state.metrics, engine):
                    async with upstream:
                        preemptible = can_resume and engine.backend.capabilities.resume
                        answered = await relay_answer(
                            ctx, upstream, relay, ticket, run, preemptible=preemptible
                        )
                        if not answered and relay is not None:
                            resume_later(ctx, engine, relay, run)
        run.ok = run.outcome.status == 200 and not run.outcome.upstream_failed
    except (asyncio.CancelledError, ConnectionResetError):
        ctx.state.metrics.client_disconnects.labels(ctx.route).inc()
        raise
    except ProxyError as err:
        if relay is None or relay.response is None:
            raise  # nothing sent yet: the edge middleware answers
        # A resumption could not be had (no engine left): the client's stream is open.
        await relay.fail(err)
        run.response = relay.response
    finally:
        account(ctx, run)
        ctx.state.gate.forget(ticket)
    observe(ctx, run)
    learner = ctx.state.learner
    if run.ok and run.engine is not None and learner is not None:
        learner.after(run.engine, ctx.model, ctx.body, chat=ctx.chat, blocks=ticket.blocks)
    return run.response


def report_service(ctx: CallContext, ticket: Ticket, tokens: int) -> None:
    """The relay streamed ``tokens`` more: the scheduler accounts them, and the gate hears
    whenever the policy did, even if the call's own priority stayed: the service may have
    moved its program's or tenant's records (a tenant floor), which rank the calls waiting
    behind it."""
    priority = ctx.state.scheduler.served(ctx.call, tokens)
    if priority is not None:
        ctx.state.gate.reprioritized(ticket, priority)
