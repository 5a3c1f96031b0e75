"""The SGLang adapter's request body: the priority that orders SGLang's queue and, under
``--radix-eviction-policy priority``, which cached contexts its radix cache evicts first."""

from __future__ import annotations

import logging

import pytest

from proxy.backends.base import CallHints
from proxy.backends.sglang import SGLangBackend
from proxy.config import EngineConfig


def body(backend: SGLangBackend, level: int) -> dict[str, object]:
    hints = CallHints(level=level, program_id="p", call_id="c")
    return backend.prepare_body({"model": "m"}, request_id="r1", hints=hints)


def test_worse_ranked_calls_carry_lower_priorities_which_sglang_evicts_first() -> None:
    backend = SGLangBackend(EngineConfig(name="s", url="http://s", kind="sglang", priority=True))
    sent = [body(backend, level)["priority"] for level in range(8)]
    assert sent == [63 - level for level in range(8)]
    # SGLang's priority eviction drops the lowest value first: the bottom level's contexts.
    assert sorted(range(8), key=lambda level: sent[level]) == list(range(7, -1, -1))
    assert body(backend, 0)["rid"] == "r1"


def test_no_priority_unless_the_engine_takes_one() -> None:
    backend = SGLangBackend(EngineConfig(name="s", url="http://s", kind="sglang"))
    assert body(backend, 3) == {"model": "m", "rid": "r1"}


def test_lower_first_polarity_warns_that_it_inverts_radix_eviction(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = EngineConfig(
        name="s", url="http://s", kind="sglang", priority=True, priority_polarity="lower-first"
    )
    with caplog.at_level(logging.WARNING):
        backend = SGLangBackend(config)
    assert "radix" in caplog.text
    assert body(backend, 2)["priority"] == 2
