from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.serve import serving
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app
from tests.e2e.servers import ServerThread

# 100x faster than real time: an answer of a few dozen tokens takes milliseconds.
FAST_SIM = SimEngineConfig(time_scale=0.01)


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    """A simulated engine of its own (50x real time) for a proxy the test builds."""
    async with serving(create_sim_app(SimEngineConfig(time_scale=0.02))) as url:
        yield url


@pytest.fixture(scope="module")
def proxy_server() -> Iterator[ServerThread]:
    """A proxy on the embedded simulated engine, as `autellix serve` starts it."""
    server = ServerThread(ProxyConfig(port=0, sim=FAST_SIM))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_url(proxy_server: ServerThread) -> str:
    assert proxy_server.proxy is not None
    return proxy_server.proxy.url


@pytest.fixture
async def proxy() -> AsyncIterator[RunningProxy]:
    """A fresh proxy on its own embedded simulated engine, on the test's event loop."""
    async with running_proxy(ProxyConfig(port=0, sim=SimEngineConfig(time_scale=0.01))) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
