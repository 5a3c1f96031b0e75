"""The edge middleware, on an app of its own (one route whose handler is the test's)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.drain import Drain
from proxy.metrics import Metrics
from proxy.middleware import edge_middleware

PATH = "/v1/chat/completions"


async def test_a_write_to_a_client_already_gone_is_a_quiet_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        # What a write raises when the client's connection is closing and the handler has
        # not been cancelled yet.
        raise ConnectionResetError("Cannot write to closing transport")

    metrics = Metrics()
    app = web.Application(middlewares=[edge_middleware(metrics, {}, Drain(), 1 << 20)])
    app.router.add_post(PATH, handler)
    caplog.set_level(logging.INFO)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(PATH, data=b"{}")
        body = await resp.json()
    assert resp.status == 499
    assert body["error"]["type"] == "client_closed_request"
    assert body["error"]["code"] == "client_closed"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f'autellix_requests_total{{route="{PATH}",status="499"}} 1.0' in (
        metrics.render().decode()
    )
