"""What the proxy says about each call: an access log line when the call's answer is done
(``access_log: true``; logger ``autellix.access``), and debug lines along the way
(``--log-level debug``; logger ``autellix.calls``).

The access line is written by the edge middleware, the one place that knows the status the
client finally got (an answer, an error, or 499 when the client went away), from what the
call's steps noted on the request. Lines are ``key=value`` pairs (logfmt), one per call::

    call=c-1a2b-3 program=9f3e/run-7 source=explicit level=0 final_level=1 engine=gpu0
    status=200 stream=true prompt_tokens=812 completion_tokens=40 arrival=1764540000.125
    wait_s=0.000 ttft_s=0.031 total_s=0.402 request_id=req-5
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from proxy.intercept.identify import Identity
from proxy.kvhints.pool import EngineState
from proxy.records import Call, Program
from proxy.relay import Outcome
from proxy.state import ProxyState

access_log = logging.getLogger("autellix.access")
call_log = logging.getLogger("autellix.calls")


class CallContext(Protocol):
    """What is read of a call's context (``proxy.calls.CallContext`` has it all); a protocol,
    so that the request path can call in here without an import cycle."""

    request: web.Request
    state: ProxyState
    stream: bool
    model: str
    identity: Identity
    program: Program
    call: Call
    request_id: str
    headers: dict[str, str]
    arrived: float


@dataclass(slots=True)
class _Noted:
    ctx: CallContext
    outcome: Outcome
    arrival_unix: float  # when the request reached the proxy


CALL_NOTE = web.RequestKey("autellix_call_note", _Noted)


def call_arrived(ctx: CallContext, outcome: Outcome) -> None:
    """The call was filed in its program: remember it for the access line (if one is kept)."""
    if ctx.state.config.access_log:
        since = time.perf_counter() - ctx.arrived
        ctx.request[CALL_NOTE] = _Noted(ctx, outcome, time.time() - since)
    if call_log.isEnabledFor(logging.DEBUG):
        call_log.debug(
            "call %s arrived: program %s (identified by %s, %d calls so far), level %d, "
            "about %d prompt tokens, model %s, %s",
            ctx.call.id, ctx.program.id, ctx.identity.source, ctx.program.calls,
            ctx.call.level, ctx.call.prompt_tokens, ctx.model,
            "streamed" if ctx.stream else "whole",
        )  # fmt: skip


def call_admitted(ctx: CallContext, engine: EngineState) -> None:
    if call_log.isEnabledFor(logging.DEBUG):
        call_log.debug(
            "call %s admitted to %s (level %d, waited %.3f s, %d in flight there)",
            ctx.call.id, engine.name, ctx.call.level, ctx.call.wait, engine.inflight,
        )  # fmt: skip


def call_preempted(ctx: CallContext, engine: EngineState, tokens: int) -> None:
    call_log.debug(
        "call %s preempted on %s after %d tokens; it will resume", ctx.call.id, engine.name, tokens
    )


def request_done(request: web.Request, status: int, started: float) -> None:
    """Called by the edge for every request, when its answer is done."""
    elapsed = time.perf_counter() - started
    if call_log.isEnabledFor(logging.DEBUG):
        call_log.debug(
            "%s %s -> %d in %.1f ms", request.method, request.path, status, elapsed * 1000
        )
    note = request.get(CALL_NOTE)
    if note is None or not note.ctx.state.config.access_log:
        return
    access_log.info("%s", access_line(note, status, elapsed))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def access_line(note: _Noted, status: int, total_s: float) -> str:
    ctx, outcome = note.ctx, note.outcome
    usage = outcome.reply.usage
    ttft = (
        outcome.first_byte_at - ctx.arrived
        if ctx.stream and outcome.first_byte_at is not None
        else None
    )
    fields = {
        "call": ctx.call.id,
        "program": ctx.program.id,
        "source": ctx.identity.source,
        "level": ctx.headers.get("X-Autellix-Priority", "-"),
        "final_level": str(ctx.call.level),
        "engine": ctx.headers.get("X-Autellix-Engine", "-"),
        "status": str(status),
        "stream": "true" if ctx.stream else "false",
        "prompt_tokens": "-" if usage is None else str(usage.prompt_tokens),
        "completion_tokens": "-" if usage is None else str(usage.completion_tokens),
        "arrival": f"{note.arrival_unix:.3f}",
        "wait_s": _num(ctx.call.wait),
        "ttft_s": _num(ttft),
        "total_s": _num(total_s),
        "request_id": ctx.request_id,
    }
    return " ".join(f"{k}={_quoted(v)}" for k, v in fields.items())


def _quoted(value: str) -> str:
    # Program ids are client-chosen: quote anything that would split the line.
    if value and all(c.isprintable() and c not in ' "=' for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
