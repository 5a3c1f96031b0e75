"""The HTTP edge: what a request goes through before any handler sees it.

aiohttp answers requests its parser cannot read (a bad header line, a bad Content-Length)
itself, in text/plain, and logs them at ERROR with a traceback. Here those answers take the
OpenAI error shape, and a client's mistake is logged at DEBUG: it says nothing about the proxy.
Request bodies are decompressed here rather than by aiohttp's parser, whose failure on a body
that does not match its Content-Encoding surfaces as an unhandled exception and a dropped
connection.
"""

from __future__ import annotations

import logging
import zlib

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDictProxy

from proxy.errors import BadRequest, PayloadTooLarge, ProxyError

log = logging.getLogger("autellix.http")

# wbits for zlib: gzip framing, zlib framing (what HTTP calls deflate), and raw deflate.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def _decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise BadRequest(
            f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none",
            param="Content-Encoding",
            code="unsupported_content_encoding",
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
        if len(out) <= limit and not inflater.unconsumed_tail:
            out += inflater.flush()
    except zlib.error as exc:
        raise BadRequest(
            f"request body is not valid {encoding} data, as its Content-Encoding says: {exc}",
            param="Content-Encoding",
            code="invalid_content_encoding",
        ) from exc
    # Size after decompression counts too: a small compressed body may inflate enormously.
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"request body exceeds {limit} bytes once decompressed", code="body_too_large"
        )
    return out


async def decode_body(request: web.Request, limit: int) -> None:
    """Decompress a gzip or deflate request body (aiohttp's own decompression is off, see
    ``ShapedRunner``); the handlers read it through ``request.read()``, which returns it."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding != "identity":
        body = _decompress(await request.read(), encoding, limit)
        request._read_bytes = body


def check_headers(headers: CIMultiDictProxy[str]) -> None:
    """aiohttp keeps header bytes that are not UTF-8 as lone surrogates; anything that later
    encodes such a value would fail deep inside. Refuse them here, naming the header."""
    for name, value in headers.items():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise BadRequest(
                    f"header {name} is not valid UTF-8", param=name, code="invalid_header"
                ) from None


class _ShapedHandler(RequestHandler):
    """aiohttp's connection handler, answering parser errors in the OpenAI shape."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.debug("unreadable request from %s: %s", request.remote, exc or message)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already; cannot send an error")
        err = ProxyError(f"the request cannot be read as HTTP: {message or exc or 'bad request'}")
        err.status, err.type, err.code = status, "invalid_request_error", "bad_http_request"
        resp = web.Response(
            status=status, body=orjson.dumps(err.to_dict()), content_type="application/json"
        )
        resp.force_close()
        return resp


class _ShapedServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _ShapedHandler(self, loop=self._loop, **self._kwargs)


class ShapedRunner(web.AppRunner):
    """An AppRunner whose connections answer unreadable requests in the OpenAI shape."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _ShapedServer  # same state, one method more specific
        return server
