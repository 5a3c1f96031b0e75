"""Sending a call to an engine and relaying its answer to the client.

Streams are relayed as they arrive (DESIGN.md rule 7): each chunk the engine sends is written
to the client at once; a ``StreamWatcher`` reads usage on the side. If the client goes away,
the engine connection is closed at once so the engine aborts the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import BadGateway, GatewayTimeout, ProxyError
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


async def open_upstream(
    session: aiohttp.ClientSession,
    engine: EngineState,
    method: str,
    path: str,
    *,
    data: bytes | None,
    headers: dict[str, str],
    connect_timeout_s: float,
    metrics: Metrics,
) -> aiohttp.ClientResponse:
    """Send the request and return the engine's response with its body not yet read.

    A connection failure becomes 502 with code ``engine_unreachable`` (nothing reached the
    engine, so the caller may try another); a timeout becomes 504.
    """
    backend = engine.backend
    timeout = aiohttp.ClientTimeout(
        total=backend.config.timeout_s, sock_connect=connect_timeout_s, connect=connect_timeout_s
    )
    try:
        return await session.request(
            method, backend.base_url + path, data=data, headers=headers, timeout=timeout
        )
    except TimeoutError as exc:
        metrics.upstream_errors.labels(backend.name, "timeout").inc()
        raise GatewayTimeout(
            f"engine {backend.name!r} ({backend.base_url}) did not answer in time",
            code="engine_timeout",
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        metrics.upstream_errors.labels(backend.name, "connect").inc()
        raise BadGateway(
            f"engine {backend.name!r} at {backend.base_url} is unreachable: {exc.os_error or exc}",
            code="engine_unreachable",
        ) from exc
    except aiohttp.ClientError as exc:
        metrics.upstream_errors.labels(backend.name, "protocol").inc()
        raise BadGateway(
            f"engine {backend.name!r} at {backend.base_url} failed: {exc}", code="engine_error"
        ) from exc


async def relay_whole(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    headers: dict[str, str],
    outcome: Outcome,
) -> web.Response:
    """A non-streamed answer (or any error answer): read it all, pass it on unchanged."""
    try:
        body = await upstream.read()
    except TimeoutError as exc:
        raise GatewayTimeout(
            "engine did not finish its answer in time", code="engine_timeout"
        ) from exc
    except aiohttp.ClientError as exc:
        raise BadGateway(f"engine broke off its answer: {exc}", code="engine_error") from exc
    outcome.status = upstream.status
    outcome.first_byte_at = outcome.first_byte_at or time.perf_counter()
    if upstream.status == 200:
        outcome.reply.absorb_body(body)
    return web.Response(status=upstream.status, body=body, headers=_copy_headers(upstream, headers))


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
        self._upstream: aiohttp.ClientResponse | None = None

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
        return self.response

    async def relay(
        self,
        upstream: aiohttp.ClientResponse,
        outcome: Outcome,
        *,
        whole_events: bool | None = None,
    ) -> bool:
        """Relay one segment. True if the answer is complete, False if it was cut.
        ``whole_events``: whether this segment may be cut (None: as the relay was made)."""
        self._cut = False
        if whole_events is not None:
            self.watcher.whole_events(whole_events)
        self._upstream = upstream
        outcome.reply = self.watcher.reply
        outcome.status = upstream.status
        response = await self._open(upstream)
        try:
            async for data in upstream.content.iter_any():
                if self._cut:
                    break
                if outcome.first_byte_at is None:
                    outcome.first_byte_at = time.perf_counter()
                forward, tokens = self.watcher.feed(data)
                if tokens:
                    self.tokens += tokens
                    if self.on_tokens is not None:
                        self.on_tokens(tokens)
                if forward:
                    await response.write(forward)
            if self._cut:
                self.watcher.discard()
                return False
            rest = self.watcher.flush()
            if rest:
                await response.write(rest)
        except (ConnectionResetError, asyncio.CancelledError):
            outcome.client_gone = True
            upstream.close()  # the engine sees its connection drop and aborts the request
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            if self._cut:
                self.watcher.discard()
                return False
            # Headers are gone already: tell the client in the stream, as OpenAI servers do.
            outcome.upstream_failed = True
            log.warning("engine stream broke off: %r", exc)
            err = BadGateway(
                f"engine stream broke off: {exc or type(exc).__name__}", code="engine_error"
            )
            with contextlib.suppress(ConnectionResetError):
                await response.write(_sse_error(err))
        finally:
            self._upstream = None
        await self.finish()
        return True

    async def fail(self, err: ProxyError) -> None:
        """A continuation could not be had: end the client's stream with the error."""
        if self.response is not None:
            with contextlib.suppress(ConnectionResetError):
                await self.response.write(_sse_error(err))
            await self.finish()

    async def finish(self) -> None:
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
) -> web.StreamResponse:
    """An SSE answer in one piece: forward each chunk as it arrives; watch it on the side."""
    relay = StreamRelay(request, headers, drop_usage_chunk=drop_usage_chunk, on_tokens=on_tokens)
    await relay.relay(upstream, outcome)
    assert relay.response is not None
    return relay.response
