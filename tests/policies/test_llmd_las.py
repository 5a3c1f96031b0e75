"""llm-d's program-aware LAS baseline: decayed weighted tokens per program, never preemptive."""

from __future__ import annotations

import math

import pytest

from proxy.policies.llmd_las import LLMDLAS, LLMDLASConfig
from proxy.policies.registry import PolicyRegistry
from proxy.records import Call, Program


def finish(policy: LLMDLAS, program: Program, prompt: int, output: int, now: float) -> None:
    call = Call(f"{program.id}/{now}", program.id, arrival=now, prompt_tokens=prompt)
    call.completion_tokens = output
    policy.on_finish(call=call, program=program, now=now)


def test_output_tokens_weigh_twice_input_tokens() -> None:
    policy, program = LLMDLAS(LLMDLASConfig(half_life_s=0)), Program("p", created=0.0)
    finish(policy, program, prompt=100, output=50, now=1.0)
    assert program.service == 200.0


def test_service_halves_every_half_life() -> None:
    policy, program = LLMDLAS(), Program("p", created=0.0)
    finish(policy, program, prompt=0, output=500, now=10.0)
    assert policy.decayed(program, 70.0) == pytest.approx(500.0)
    finish(policy, program, prompt=0, output=0, now=70.0)
    assert program.service == pytest.approx(500.0)


def test_less_served_program_ranks_first_and_new_programs_tie_at_the_top() -> None:
    policy = LLMDLAS()
    heavy, light, new = (Program(n, created=0.0) for n in ("heavy", "light", "new"))
    finish(policy, heavy, prompt=1000, output=1000, now=5.0)
    finish(policy, light, prompt=10, output=10, now=5.0)
    ranks = {
        p.id: policy.on_arrival(call=Call(f"{p.id}/x", p.id, arrival=6.0), program=p, now=6.0)
        for p in (heavy, light, new)
    }
    assert ranks["new"] < ranks["light"] < ranks["heavy"]
    assert ranks["new"].key == -math.inf
    assert {r.level for r in ranks.values()} == {0}  # one level: the preemption rule never fires


def test_old_service_ages_out_against_recent_service() -> None:
    # 4000 weighted tokens two half-lives ago count as 1000: less than 1500 just now.
    policy = LLMDLAS()
    old, recent = Program("old", created=0.0), Program("recent", created=0.0)
    finish(policy, old, prompt=0, output=2000, now=0.0)
    finish(policy, recent, prompt=0, output=750, now=120.0)
    assert policy.key(old) < policy.key(recent)


def test_rank_does_not_change_while_waiting() -> None:
    policy, program = LLMDLAS(), Program("p", created=0.0)
    finish(policy, program, prompt=10, output=10, now=1.0)
    call = Call("p/2", "p", arrival=2.0)
    first = policy.on_arrival(call=call, program=program, now=2.0)
    assert policy.stable_until(call=call, program=program, now=2.0) == math.inf
    assert policy.priority(call=call, program=program, now=500.0) == first


def test_registered_and_refuses_bad_settings() -> None:
    registry = PolicyRegistry()
    assert isinstance(registry.create("llmd-las", {"half_life_s": 30}), LLMDLAS)
    with pytest.raises(ValueError, match="must not be negative"):
        LLMDLASConfig(half_life_s=-1)
