"""The live scheduler hears of a streaming call's service only when the policy's answer can
change, and still demotes it at the very chunk an every-chunk report would."""

from __future__ import annotations

from typing import Any

from proxy.config import ProxyConfig
from proxy.ids import IdGen
from proxy.intercept.identify import Identity
from proxy.metrics import Metrics
from proxy.policies.base import Priority
from proxy.records import Call, Program
from proxy.scheduler import Scheduler


class Counting:
    """A policy wrapper that counts ``on_service`` and can hide ``service_slack``."""

    def __init__(self, policy: Any, *, slack: bool) -> None:
        self.policy = policy
        self.reports = 0
        if slack:
            self.service_slack = policy.service_slack

    def __getattr__(self, name: str) -> Any:
        if name == "service_slack":
            raise AttributeError(name)  # hidden: the policy reports every chunk
        return getattr(self.policy, name)

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        self.reports += 1
        result: Priority = self.policy.on_service(call=call, program=program, now=now)
        return result


def scheduler(*, slack: bool, **policy: Any) -> tuple[Scheduler, Counting]:
    from proxy.app import build_scheduler

    config = ProxyConfig(
        policy="plas",
        policy_config=policy,
        programs={"decode_token_s": 0.01, "prefill_token_s": 0.001},  # type: ignore[arg-type]
    )
    built = build_scheduler(config, Metrics(), IdGen("t"))
    counting = Counting(built.policy, slack=slack)
    sched = Scheduler(
        table=built.table,
        policy=counting,  # type: ignore[arg-type]
        identifier=built.identifier,
        metrics=built.metrics,
        clock=lambda: 1.0,
    )
    return sched, counting


def levels_per_chunk(sched: Scheduler, chunks: int, program: str = "p") -> list[int]:
    _, call, _ = sched.arrive(Identity(program_id=program, source="header"), prompt_tokens=10)
    sched.started(call, "e")
    levels = []
    for _ in range(chunks):
        priority = sched.served(call, 1)
        levels.append(call.level if priority is None else priority.level)
    return levels


def test_a_stream_is_demoted_at_the_same_chunk_with_fewer_reports() -> None:
    settings = {"first": 0.05, "growth": 2.0, "levels": 5}
    every, every_policy = scheduler(slack=False, **settings)
    batched, batched_policy = scheduler(slack=True, **settings)
    expected = levels_per_chunk(every, 2000)
    assert levels_per_chunk(batched, 2000) == expected
    assert expected[0] < expected[-1]  # the stream was demoted on its way
    assert every_policy.reports == 2000
    assert batched_policy.reports < 50


def test_a_finished_sibling_makes_running_calls_report_at_their_next_chunk() -> None:
    sched, policy = scheduler(slack=True, first=100.0)
    identity = Identity(program_id="p", source="header")
    _, a, _ = sched.arrive(identity, prompt_tokens=10)
    _, b, _ = sched.arrive(identity, prompt_tokens=10)
    sched.started(a, "e")
    sched.started(b, "e")
    sched.served(a, 1)
    sched.served(a, 1)
    assert policy.reports == 1  # far from its boundary: the second chunk needs no report
    sched.finish(b, identity, ok=True, usage=(10, 1), reply=None)
    sched.served(a, 1)  # the program's wait changed: a may have become a starving call
    assert policy.reports == 2


def test_a_tenant_floor_reports_every_chunk() -> None:
    sched, policy = scheduler(slack=True, tenant_floor={})
    levels_per_chunk(sched, 20)
    assert policy.reports == 20
