"""Sending a call to an engine and relaying its answer to the client.

Streams are relayed as they arrive (DESIGN.md rule 7): each chunk the engine sends is written
to the client at once; a ``StreamWatcher`` reads usage on the side. If the client goes away,
the engine connection is closed at once so the engine aborts the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.alarms import Alarms
from proxy.drain import DRAIN
from proxy.errors import BadGateway, GatewayTimeout, ProxyError
from proxy.faults import IdleWatch, settle
from proxy.intercept.usage import Reply, StreamWatcher
from proxy.kvhints.pool import EngineState
from proxy.metrics import Metrics

log = logging.getLogger("autellix.relay")

# Hop-by-hop and framing headers are the proxy's own business on each leg.
_DROP_RESPONSE_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
        "Upgrade", "Proxy-Authenticate", "Trailer", "TE", "Server", "Date",
    )
)  # fmt: skip


@dataclass(slots=True)
class Outcome:
    """How an engine call ended, for the process table and metrics."""

    reply: Reply = field(default_factory=Reply)
    status: int = 0
    first_byte_at: float | None = None  # perf_counter() of the engine's first byte
    client_gone: bool = False
    upstream_failed: bool = False
    failure: str | None = None  # why, when upstream_failed
    # Loop time by which the engine must have finished (its ``timeout_s`` from the send):
    # checked by the timers the relay runs anyway, rather than by one more timer per call.
    deadline: float | None = None


def engine_deadline(engine: EngineState) -> float:
    """The ``Outcome.deadline`` of a call sent to ``engine`` now."""
    return asyncio.get_running_loop().time() + engine.backend.config.timeout_s


def upstream_session() -> aiohttp.ClientSession:
    """The one client session to every engine. Engines set no cookies the proxy should keep
    (and one tenant's must never reach another's calls), answers are relayed as they come
    (compressed or not). (No ``skip_auto_headers``: aiohttp then copies every request's
    headers to check them.) No limit on
    connections: the gate decides how many calls each engine gets. No session timeout:
    each call sets its engine's own."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )


def _copy_headers(upstream: aiohttp.ClientResponse, extra: dict[str, str]) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for k, v in upstream.headers.items():
        if k.lower() not in _DROP_RESPONSE_HEADERS:
            headers.add(k, v)
    for name, value in extra.items():
        headers[name] = value  # replaces the engine's own, whatever its spelling (X-Request-ID)
    return headers


def connect_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The timeout of every engine request: ``seconds`` to connect. No total: aiohttp would
    arm a timer per request for it; an alarm bounds the wait for the answer instead."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, connect=seconds)


async def open_upstream(
    session: aiohttp.ClientSession,
    engine: EngineState,
    method: str,
    path: str,
    *,
    data: bytes | None,
    headers: dict[str, str],
    connect: aiohttp.ClientTimeout,
    metrics: Metrics,
    alarms: Alarms,
    deadline: float | None = None,
) -> aiohttp.ClientResponse:
    """Send the request and return the engine's response with its body not yet read.

    ``connect``: a ``connect_timeout``. A connection failure becomes 502 with code
    ``engine_unreachable`` (nothing reached the engine, so the caller may try another); a
    timeout becomes 504. The answer must begin within the engine's ``first_byte_timeout_s``
    (and before ``deadline``, loop time), on one of ``alarms`` (no loop timer of its own).
    """
    backend = engine.backend
    first_byte = asyncio.get_running_loop().time() + backend.config.first_byte_timeout_s
    alarm = alarms.at(first_byte if deadline is None else min(first_byte, deadline))
    try:
        try:
            return await session.request(
                method,
                backend.base_url + path,
                data=data,
                headers=headers,
                timeout=connect,
            )
        except asyncio.CancelledError:
            if not alarm.own():
                raise
            raise TimeoutError from None
        finally:
            alarm.cancel()
    except TimeoutError:
        metrics.upstream_errors.labels(backend.name, "timeout").inc()
        err: ProxyError = GatewayTimeout(
            f"engine {backend.name!r} ({backend.base_url}) did not begin its answer in time",
            code="engine_timeout",
        )
    except aiohttp.ClientConnectorError as exc:
        metrics.upstream_errors.labels(backend.name, "connect").inc()
        err = BadGateway(
            f"engine {backend.name!r} at {backend.base_url} is unreachable: {exc.os_error or exc}",
            code="engine_unreachable",
        )
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(backend.name, "protocol").inc()
        err = BadGateway(
            f"engine {backend.name!r} at {backend.base_url} failed: {exc}", code="engine_error"
        )
    engine.failed(err.message)
    raise err


async def relay_whole(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    outcome: Outcome,
    *,
    engine: EngineState | None = None,
    expect_json: bool = False,
) -> web.Response:
    """A non-streamed answer (or any error answer): read it all, pass it on unchanged.
    ``expect_json``: a 200 must hold JSON (a generation answer), else it is a 502."""
    watch = None
    if not upstream.content.is_eof():  # all of it here already (the usual case): no timer
        idle = math.inf if engine is None else engine.backend.config.idle_timeout_s
        if min(idle, outcome.deadline or math.inf) < math.inf:
            # No kick while reading: the whole read must end within idle_timeout_s.
            watch = IdleWatch(upstream, idle, outcome.deadline)
    try:
        body = await upstream.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        if watch is not None and (watch.fired or watch.expired):
            err: ProxyError = GatewayTimeout(
                "engine did not finish its answer in time", code="engine_timeout"
            )
        else:
            err = BadGateway(f"engine broke off its answer: {exc}", code="engine_error")
        raise _failed(engine, err) from exc
    finally:
        if watch is not None:
            watch.cancel()
    outcome.status = upstream.status
    outcome.first_byte_at = outcome.first_byte_at or time.perf_counter()
    if upstream.status == 200 and not outcome.reply.absorb_body(body) and expect_json:
        err = BadGateway(
            "engine answered 200 with a body that is not a JSON object", code="engine_bad_answer"
        )
        raise _failed(engine, err)
    return web.Response(status=upstream.status, body=body, headers=_copy_headers(upstream, headers))


def _failed(engine: EngineState | None, err: ProxyError) -> ProxyError:
    if engine is not None:
        engine.failed(err.message)
    return err


def _sse_error(err: ProxyError) -> bytes:
    return b"data: " + orjson.dumps(err.to_dict()) + b"\n\n"


class StreamRelay:
    """One client stream, fed by one engine answer or, when the call is preempted and
    resumed, by several in turn (DESIGN.md rule 7: chunks go on as they arrive)."""

    def __init__(
        self,
        request: web.Request,
        headers: dict[str, str],
        *,
        drop_usage_chunk: bool,
        whole_events: bool = False,
        on_tokens: Callable[[int], None] | None = None,
    ) -> None:
        self.request = request
        self.headers = headers
        self.watcher = StreamWatcher(drop_usage_chunk=drop_usage_chunk, whole_events=whole_events)
        self.on_tokens = on_tokens
        self.response: web.StreamResponse | None = None
        self.tokens = 0  # generated tokens relayed so far, over all segments
        self._cut = False
        self._ending: ProxyError | None = None  # set by a drain: end the stream with it
        self._closed = False  # the client's stream has ended
        self._closing: asyncio.Task[None] | None = None
        self._upstream: aiohttp.ClientResponse | None = None

    def end_with(self, err: ProxyError) -> None:
        """End the client's stream with ``err`` as its last event (the proxy is draining)."""
        self._ending = err
        self.cut()
        if self._upstream is None and self.response is not None and not self._closed:
            # Preempted and waiting to resume: no relay loop will notice, so end it here.
            self._closing = asyncio.get_running_loop().create_task(self.fail(err))

    def cut(self) -> None:
        """Stop relaying the current segment at the next event boundary (preemption)."""
        self._cut = True
        if self._upstream is not None:
            self._upstream.close()  # the engine sees the connection drop and frees the request

    async def _open(self, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        if self.response is None:
            self.response = web.StreamResponse(
                status=upstream.status, headers=_copy_headers(upstream, self.headers)
            )
            self.response.headers.setdefault("Cache-Control", "no-cache")
            await self.response.prepare(self.request)
            drain = self.request.app.get(DRAIN)
            if drain is not None:
                drain.streams.add(self)
        return self.response

    async def relay(
        self,
        upstream: aiohttp.ClientResponse,
        outcome: Outcome,
        engine: EngineState | None = None,
        *,
        whole_events: bool | None = None,
    ) -> bool:
        """Relay one segment. True if the answer is complete, False if it was cut.
        With ``engine``, its ``idle_timeout_s`` bounds the silence between chunks, and the
        outcome counts toward its passive health. ``whole_events``: whether this segment may
        be cut (None: as the relay was made)."""
        if whole_events is not None:
            self.watcher.whole_events(whole_events)
        self._cut = self._ending is not None
        if self._cut:
            upstream.close()  # drained while this segment waited for its engine
            if self._closed:
                return True
        self._upstream = upstream
        outcome.reply = self.watcher.reply
        outcome.status = upstream.status
        response = await self._open(upstream)
        watch = (
            None
            if engine is None
            else IdleWatch(upstream, engine.backend.config.idle_timeout_s, outcome.deadline)
        )
        failure: ProxyError | None = None
        read = upstream.content.readany  # (not ``iter_any``: one coroutine less per read)
        try:
            while data := await read():
                if self._cut:
                    break
                if watch is not None:
                    watch.kick()
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = time.perf_counter()
                forward, tokens = self.watcher.feed(data)
                if tokens:
                    self.tokens += tokens
                    if self.on_tokens is not None:
                        self.on_tokens(tokens)
                if forward:
                    await response.write(forward)
                if self.watcher.garbled:
                    failure = BadGateway(
                        "engine sent an event that is not JSON", code="engine_bad_answer"
                    )
                    break
            # A cut that lands after [DONE] came too late: the client has the whole answer.
            if self._cut and self._ending is None and not self.watcher.done:
                self.watcher.discard()
                return False
            failure = failure or self._ending
            if failure is None and watch is not None:
                failure = _watch_error(watch, engine)
            if failure is None:
                rest = self.watcher.flush()
                if rest:
                    await response.write(rest)
        except (ConnectionResetError, asyncio.CancelledError):
            outcome.client_gone = True
            upstream.close()  # the engine sees its connection drop and aborts the request
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            if self._cut and self._ending is None and not self.watcher.done:
                self.watcher.discard()
                return False
            failure = (
                self._ending
                or (None if watch is None else _watch_error(watch, engine))
                or BadGateway(
                    f"engine stream broke off: {exc or type(exc).__name__}", code="engine_error"
                )
            )
        finally:
            self._upstream = None
            if watch is not None:
                watch.cancel()
        if failure is not None:
            if self._ending is None:
                log.warning("engine stream failed: %s", failure.message)
            # Headers are gone already: tell the client in the stream, as OpenAI servers do.
            outcome.upstream_failed = True
            outcome.failure = failure.message
            upstream.close()
            with contextlib.suppress(ConnectionResetError):
                await response.write(_sse_error(failure))
        if engine is not None and self._ending is None:
            settle(engine, outcome)
        await self.finish()
        return True

    async def fail(self, err: ProxyError) -> None:
        """A continuation could not be had: end the client's stream with the error."""
        if self.response is not None:
            with contextlib.suppress(ConnectionResetError):
                await self.response.write(_sse_error(err))
            await self.finish()

    async def finish(self) -> None:
        self._closed = True
        drain = self.request.app.get(DRAIN)
        if drain is not None:
            drain.streams.discard(self)
        if self.response is not None:
            with contextlib.suppress(ConnectionResetError):
                await self.response.write_eof()


async def relay_stream(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    outcome: Outcome,
    *,
    drop_usage_chunk: bool,
    on_tokens: Callable[[int], None] | None = None,
    engine: EngineState | None = None,
) -> web.StreamResponse:
    """An SSE answer in one piece: forward each chunk as it arrives; watch it on the side."""
    relay = StreamRelay(request, headers, drop_usage_chunk=drop_usage_chunk, on_tokens=on_tokens)
    await relay.relay(upstream, outcome, engine)
    assert relay.response is not None
    return relay.response


def _watch_error(watch: IdleWatch, engine: EngineState | None) -> ProxyError | None:
    if watch.expired:
        return GatewayTimeout("engine did not finish its answer in time", code="engine_timeout")
    return _silent(engine) if watch.fired else None


def _silent(engine: EngineState | None) -> ProxyError:
    seconds = "" if engine is None else f" for {engine.backend.config.idle_timeout_s:g} s"
    return GatewayTimeout(f"engine went silent mid-answer{seconds}", code="engine_timeout")
