from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy.config import ProxyConfig
from proxy.sim.config import SimEngineConfig
from tests.e2e.servers import ServerThread

# 100x faster than real time: an answer of a few dozen tokens takes milliseconds.
FAST_SIM = SimEngineConfig(time_scale=0.01)


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
