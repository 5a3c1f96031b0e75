"""Fuzzed requests against a real proxy: never a 5xx, every error in the OpenAI shape, and no
ERROR log for a client's mistake (benchmarks/bench_fuzz.py runs the same cases by the 10,000)."""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config import ProxyConfig
from proxy.keyconfig import ApiKeyConfig
from proxy.sim.engine.config import SimEngineConfig
from tests.e2e.fuzz import parse_answer, random_case, raw_request
from tests.e2e.servers import ServerThread

pytestmark = pytest.mark.e2e


KEYS = [
    ApiKeyConfig.model_validate({"key": "sk-1", "tenant": "one"}),
    ApiKeyConfig.model_validate({"key": "sk-2", "tenant": "two", "admin": True}),
]


@pytest.fixture(scope="module", params=["open", "keyed"])
def fuzz_target(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """The proxy open, and with keys (the fuzzer's bearer tokens include a valid one)."""
    keys = KEYS if request.param == "keyed" else []
    server = ServerThread(ProxyConfig(port=0, sim=SimEngineConfig(time_scale=0.001), api_keys=keys))
    host, _, port = server.start().removeprefix("http://").rpartition(":")
    yield host, int(port)
    server.stop()


def exchange(address: tuple[str, int], data: bytes) -> bytes:
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def check_answer(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body[:500]
    if status >= 400:
        assert content_type.startswith("application/json"), body[:500]
        err = orjson.loads(body)["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert isinstance(err["message"], str)


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rng=st.randoms(use_true_random=False))
def test_fuzzed_requests_never_5xx(
    fuzz_target: tuple[str, int], rng: random.Random, caplog: pytest.LogCaptureFixture
) -> None:
    case = random_case(rng)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        answer = parse_answer(exchange(fuzz_target, raw_request(case)))
    check_answer(answer.status, answer.content_type, answer.body)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
