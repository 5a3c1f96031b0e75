"""Bad input found by fuzzing: each answers 400 naming the field or header, never 500."""

from __future__ import annotations

import gzip
import logging
import zlib
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.config import ProxyConfig
from proxy.server import RunningProxy, running_proxy
from tests.e2e.fuzz import Case, parse_answer, raw_request
from tests.e2e.test_security import raw_request as send_raw

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
CHAT: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 4,
}
DEEP = orjson.dumps(CHAT)[:-1] + b',"x":' + b"[" * 300 + b"]" * 300 + b"}"


def error_of(payload: Any) -> dict[str, Any]:
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "headers", "param"),
    [
        (DEEP, {}, None),
        (orjson.dumps(CHAT), {"Content-Encoding": "gzip"}, "Content-Encoding"),
        (orjson.dumps(CHAT), {"Content-Encoding": "deflate"}, "Content-Encoding"),
        (orjson.dumps(CHAT), {"Content-Encoding": "bogus"}, "Content-Encoding"),
        (orjson.dumps({**CHAT, "tools": 5}), {}, "tools"),
        (orjson.dumps({**CHAT, "tools": [5]}), {}, "tools.0"),
    ],
)
async def test_bad_bodies_are_400(
    proxy: RunningProxy,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    headers: dict[str, str],
    param: str | None,
) -> None:
    with caplog.at_level(logging.INFO):
        async with http.post(
            proxy.url + "/v1/chat/completions",
            data=data,
            headers={"Content-Type": "application/json", **headers},
        ) as resp:
            assert resp.status == 400
            err = error_of(await resp.json())
    assert err["param"] == param
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_compressed_bodies_are_read_and_bombs_refused(http: aiohttp.ClientSession) -> None:
    async with running_proxy(ProxyConfig(port=0, max_body_bytes=4096)) as proxy:
        url = proxy.url + "/v1/chat/completions"
        for encoding, packed in (
            ("gzip", gzip.compress(orjson.dumps(CHAT))),
            ("deflate", zlib.compress(orjson.dumps(CHAT))),
        ):
            headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
            async with http.post(url, data=packed, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        bomb = gzip.compress(orjson.dumps({**CHAT, "pad": "x" * 100_000}))
        assert len(bomb) < 4096
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        async with http.post(url, data=bomb, headers=headers) as resp:
            assert resp.status == 413
            error_of(await resp.json())


@pytest.mark.parametrize("header", ["session-id", "X-Program-Id", "Authorization"])
async def test_header_bytes_that_are_not_utf8_are_400(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    value = b"Bearer \xff\xfe" if header == "Authorization" else b"\xff\xfe"
    case = Case("POST", "/v1/chat/completions", {header: value}, orjson.dumps(CHAT))
    status, body = await send_raw(proxy.url, raw_request(case))
    assert status == 400
    assert error_of(orjson.loads(body))["param"] == header
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n",
    ],
)
async def test_unreadable_http_is_answered_in_openai_shape(
    proxy: RunningProxy, caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    with caplog.at_level(logging.INFO):
        status, body = await send_raw(proxy.url, head)
    assert 400 <= status < 500
    assert error_of(orjson.loads(body))["type"] == "invalid_request_error"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_parse_answer_reads_chunked_bodies() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert parse_answer(data).body == b"abcde"
