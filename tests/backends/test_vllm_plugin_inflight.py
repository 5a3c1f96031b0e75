"""The plug-in's reading of vLLM's async-scheduling counters (no vLLM needed: requests are
duck-typed, with the fields vLLM 0.32.0's ``Request`` has)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxy.backends.vllm_plugin.inflight import last_step_in_flight, must_wait_for_output


def request(**fields: object) -> SimpleNamespace:
    base: dict[str, object] = {
        "num_prompt_tokens": 8,
        "max_tokens": 10,
        "num_computed_tokens": 0,
        "num_output_placeholders": 0,
        "num_stale_output_tokens": 0,
        "drop_stale_output": False,
    }
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(
    ("stale", "drop", "waits"),
    [(0, False, False), (1, False, True), (2, False, True), (1, True, False)],
)
def test_a_preempted_request_waits_for_output_it_will_deliver(
    stale: int, drop: bool, waits: bool
) -> None:
    # Output to be dropped (vLLM resamples those positions) holds nothing back.
    assert (
        must_wait_for_output(request(num_stale_output_tokens=stale, drop_stale_output=drop))
        is waits
    )


@pytest.mark.parametrize(
    ("computed", "placeholders", "last"),
    [
        (17, 1, True),  # prompt 8 + 9 delivered, the 10th (last) token in flight
        (16, 1, False),  # the 9th in flight: one more step to schedule
        (18, 2, True),  # two in flight: the last is reached even if one is a rejected draft
        (17, 2, False),  # two in flight, one maybe a draft that gets rejected: not sure yet
        (17, 0, False),  # nothing in flight: the synchronous scheduler's state
    ],
)
def test_a_running_request_is_done_when_its_last_token_is_in_flight(
    computed: int, placeholders: int, last: bool
) -> None:
    r = request(num_computed_tokens=computed, num_output_placeholders=placeholders)
    assert last_step_in_flight(r) is last
