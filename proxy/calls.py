"""Serving one generation call: through the gate to an engine, relayed back, preempted and
resumed as the gate decides, and accounted in the process table whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from proxy import accesslog
from proxy.backends.base import CallHints
from proxy.errors import BadGateway, ProxyError
from proxy.gate import Ticket
from proxy.intercept.identify import Identity
from proxy.kvhints.pool import EngineState
from proxy.records import Call, Program
from proxy.relay import Outcome, StreamRelay, open_upstream, relay_whole
from proxy.resume import Continuation, continuation_body, resumable

if TYPE_CHECKING:
    from proxy.app import ProxyState

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


def upstream_headers(
    request: web.Request, state: ProxyState, engine: EngineState, request_id: str
) -> dict[str, str]:
    headers = {h: request.headers[h] for h in FORWARD_HEADERS if h in request.headers}
    client_auth = request.headers.get("Authorization") if state.config.forward_client_auth else None
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


async def serve_call(ctx: CallContext) -> web.StreamResponse:
    state, call = ctx.state, ctx.call
    scheduler, gate, metrics = state.scheduler, state.gate, state.metrics
    ticket = Ticket(call=call, program=ctx.program, model=ctx.model)
    can_resume = state.config.gate.preempt and resumable(ctx.body, chat=ctx.chat, stream=ctx.stream)
    relay = None
    if ctx.stream:
        relay = StreamRelay(
            ctx.request,
            ctx.headers,
            drop_usage_chunk=ctx.drop_usage,
            whole_events=can_resume,  # never forward half an event that a preemption could cut
            on_tokens=lambda n: _served(ctx, ticket, n),
        )
    outcome = Outcome()
    accesslog.call_arrived(ctx, outcome)
    body, segment, tries = ctx.body, 0, 0
    response: web.StreamResponse | None = None
    ok = False
    engine: EngineState | None = None
    try:
        while response is None:
            engine = await gate.acquire(ticket)
            metrics.admissions.labels(engine.name).inc()
            accesslog.call_admitted(ctx, engine)
            rid = ctx.request_id if segment == 0 else f"{ctx.request_id}-r{segment}"
            try:
                ctx.headers["X-Autellix-Engine"] = engine.name
                scheduler.started(call, engine.name)
                data = orjson.dumps(
                    engine.backend.prepare_body(body, request_id=rid, hints=_hints(ctx))
                )
                try:
                    upstream = await open_upstream(
                        state.client(), engine, "POST", ctx.request.path, data=data,
                        headers=upstream_headers(ctx.request, state, engine, rid),
                        connect_timeout_s=state.config.connect_timeout_s, metrics=metrics,
                    )  # fmt: skip
                except BadGateway as err:
                    tries += 1
                    if err.code != "engine_unreachable" or tries >= MAX_CONNECT_TRIES:
                        raise
                    state.pool.mark_failed(engine, err.message)
                    metrics.engine_healthy.labels(engine.name).set(0)
                    if not state.pool.healthy_for(ctx.model):
                        raise
                    continue  # nothing reached the engine: try another
                engine.inflight += 1
                metrics.inflight.labels(engine.name).inc()
                try:
                    async with upstream:
                        if relay is not None and upstream.status == 200:
                            ticket.preemptible = can_resume and engine.backend.capabilities.resume
                            ticket.on_preempt = relay.cut
                            if await relay.relay(upstream, outcome):
                                response = relay.response
                            else:
                                metrics.preemptions.labels(engine.name).inc()
                                accesslog.call_preempted(ctx, engine, relay.tokens)
                                scheduler.preempted(call)
                                state.spawn(_abort_quietly(ctx, engine, rid))
                                if relay.response is not None and outcome.reply.id is not None:
                                    relay.watcher.rewrite = Continuation(
                                        outcome.reply.id, outcome.reply.created, relay.tokens
                                    )
                                    body = continuation_body(
                                        ctx.body,
                                        chat=ctx.chat,
                                        text=outcome.reply.text,
                                        tokens=relay.tokens,
                                    )
                                segment += 1
                                metrics.resumes.inc()
                        elif relay is not None and relay.response is not None:
                            # A continuation failed: the client's stream is open, end it there.
                            text = (await upstream.read()).decode(errors="replace")[:500]
                            await relay.fail(
                                BadGateway(f"resuming the call failed: {upstream.status} {text}")
                            )
                            outcome.upstream_failed = True
                            response = relay.response
                        else:
                            response = await relay_whole(
                                ctx.request, upstream, ctx.headers, outcome
                            )
                finally:
                    engine.inflight -= 1
                    metrics.inflight.labels(engine.name).dec()
            finally:
                gate.release(ticket)
        ok = outcome.status == 200 and not outcome.upstream_failed
    except (asyncio.CancelledError, ConnectionResetError):
        metrics.client_disconnects.labels(ctx.route).inc()
        raise
    except ProxyError as err:
        if relay is None or relay.response is None:
            raise  # nothing sent yet: the error middleware answers
        # A resumption could not be had (no engine left): the client's stream is open.
        await relay.fail(err)
        response = relay.response
    finally:
        usage = outcome.reply.usage
        scheduler.finish(
            call,
            ctx.identity,
            ok=ok,
            usage=None if usage is None else (usage.prompt_tokens, usage.completion_tokens),
            reply=outcome.reply.assistant_message() if ok and ctx.chat else None,
            preemptions=segment,
        )
    assert response is not None  # the loop ends only with an answer
    if ctx.stream and outcome.first_byte_at is not None and outcome.status == 200:
        metrics.ttft.labels(ctx.route).observe(outcome.first_byte_at - ctx.arrived)
    if usage is not None and engine is not None:
        metrics.tokens.labels(engine.name, "prompt").inc(usage.prompt_tokens)
        metrics.tokens.labels(engine.name, "completion").inc(usage.completion_tokens)
    return response


def _served(ctx: CallContext, ticket: Ticket, tokens: int) -> None:
    priority = ctx.state.scheduler.served(ctx.call, tokens)
    if priority is not None and priority != ticket.priority:
        ctx.state.gate.reprioritized(ticket, priority)
