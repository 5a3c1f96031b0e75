"""The discrete-event simulator: schedules computed by hand on tiny engines, determinism,
Little's law on a steady-state run, and a plug-in policy run unchanged through the registry."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from proxy.policies.base import BasePolicy, NoConfig, Priority, assigned
from proxy.policies.fcfs import FCFS
from proxy.policies.registry import PolicyRegistry
from proxy.records import Call, Program
from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.engine import EngineModel, StepResult
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.policy_queue import PreemptConfig
from proxy.sim.simulator.results import metrics
from proxy.sim.simulator.simconfig import EngineShape, SimConfig
from proxy.sim.simulator.workloads import (
    CallSpec,
    LengthDist,
    ProgramSpec,
    WorkloadSpec,
    from_trace,
    generate,
)
from proxy.trace import TraceRecorder, read_trace

# Round numbers: 1 s per step, 0.1 s per decoding sequence, 0.01 s per prefilled token.
SIMPLE = CostModel(
    base_s=1.0,
    decode_per_seq_s=0.1,
    decode_per_kv_token_s=0.0,
    prefill_per_token_s=0.01,
    prefill_attn_per_pair_s=0.0,
)
TINY = EngineShape(
    cost=SIMPLE,
    max_num_seqs=4,
    kv_capacity_tokens=64,
    max_num_batched_tokens=8,
    block_size=4,
    prefix_cache=False,
)


def config(**changes: object) -> SimConfig:
    shape_changes = {
        k: changes.pop(k) for k in list(changes) if k in EngineShape.__dataclass_fields__
    }
    shape = dataclasses.replace(TINY, **shape_changes)  # type: ignore[arg-type]
    return SimConfig(shape=shape, **changes)  # type: ignore[arg-type]


def chain(pid: str, *calls: tuple[int, int], think: float = 0.0, at: float = 0.0) -> ProgramSpec:
    specs = [
        CallSpec(i, p, o, (i - 1,) if i else (), think if i else 0.0)
        for i, (p, o) in enumerate(calls)
    ]
    return ProgramSpec(pid, "test", at, tuple(specs))


def finishes(result: object) -> dict[tuple[str, int], float]:
    return {(c.program, c.index): round(c.finished, 6) for c in result.calls}  # type: ignore[attr-defined]


def test_one_call_by_hand() -> None:
    # 10-token prompt in chunks of 8 and 2 (1.08 s, 1.02 s: the first token comes with the
    # last chunk), then two decodes of 1.1 s.
    result = Simulator(config(), FCFS()).run([chain("a", (10, 3))])
    (call,) = result.calls
    assert call.first_token == pytest.approx(2.10)
    assert call.finished == pytest.approx(4.30)
    (program,) = result.programs
    assert program.token_latency == pytest.approx(4.30 / 3)
    assert (result.generated_tokens, result.prefill_tokens, result.steps) == (3, 10, 4)


def test_think_time_and_its_exclusion_from_latency() -> None:
    result = Simulator(config(), FCFS()).run([chain("a", (10, 3), (5, 1), think=0.5)])
    assert finishes(result) == {("a", 0): 4.3, ("a", 1): 4.8 + 1.05}
    (program,) = result.programs
    assert program.tool_s == pytest.approx(0.5)
    assert program.response_s == pytest.approx(5.85 - 0.5)
    assert program.token_latency == pytest.approx(5.35 / 4)


def test_prefix_cache_skips_the_shared_part() -> None:
    # Call 2 resends call 1's 13-token context (3 whole blocks cached: 12 tokens) + 3 new.
    second = CallSpec(1, 16, 1, (0,), 0.5, prefix_of=0, prefix_tokens=13)
    program = ProgramSpec("a", "test", 0.0, (CallSpec(0, 10, 3), second))
    cached = Simulator(config(prefix_cache=True), FCFS()).run([program])
    assert finishes(cached)[("a", 1)] == pytest.approx(4.8 + 1.04)  # 4 tokens prefilled
    assert cached.calls[1].cached_tokens == 12
    uncached = Simulator(config(), FCFS()).run([program])
    assert finishes(uncached)[("a", 1)] == pytest.approx(4.8 + 1.08 + 1.08)


def test_two_engines_serve_in_parallel() -> None:
    programs = [chain("a", (10, 3)), chain("b", (10, 3))]
    one = Simulator(config(max_num_seqs=1), FCFS()).run(programs)
    two = Simulator(config(max_num_seqs=1, engines=2, balancer="round-robin"), FCFS()).run(programs)
    assert max(finishes(one).values()) == pytest.approx(4.3 + 4.3)
    assert finishes(two) == {("a", 0): 4.3, ("b", 0): 4.3}
    assert {c.engine for c in two.calls} == {0, 1}


class VIP(BasePolicy):
    """A plug-in: programs named vip* rank one level above everyone; it counts its hooks."""

    name: ClassVar[str] = "vip"
    Config: ClassVar[type] = NoConfig

    def __init__(self, config: NoConfig | None = None) -> None:
        self.arrivals = 0
        self.finishes = 0

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        self.arrivals += 1
        return super().on_arrival(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0 if program.id.startswith("vip") else 1, call.arrival))

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        self.finishes += 1
        super().on_finish(call=call, program=program, now=now)


BULK_AND_VIP = [chain("bulk", (4, 20)), chain("vip", (4, 1), at=2.0)]
PREEMPTIVE = {
    "max_num_seqs": 1,
    "rerank_interval_s": 0.5,
    "preempt": PreemptConfig(min_quantum_s=0),
}


def test_plugin_policy_runs_unchanged_and_preempts_by_its_priorities() -> None:
    policy = PolicyRegistry().create(f"{__name__}:VIP")
    assert isinstance(policy, VIP)
    result = Simulator(config(preemption="recompute", **PREEMPTIVE), policy).run(BULK_AND_VIP)
    # bulk: prefill (1.04) and one decode (1.1) by 2.14; vip arrived at 2.0 and takes its slot at
    # 2.14 (1.04 s); bulk re-prefills 4 + 2 tokens (1.06 s, its 3rd token) then 17 decodes.
    assert finishes(result) == {("vip", 0): 3.18, ("bulk", 0): round(4.24 + 17 * 1.1, 6)}
    assert result.priority_preemptions == 1
    assert (policy.arrivals, policy.finishes) == (2, 2)
    fcfs = Simulator(config(**PREEMPTIVE), FCFS()).run(BULK_AND_VIP)
    assert finishes(fcfs) == {("bulk", 0): round(2.14 + 18 * 1.1, 6), ("vip", 0): 22.98}
    assert fcfs.priority_preemptions == 0


def test_swap_keeps_the_kv_and_costs_the_copies() -> None:
    # 1 byte per token at 2 bytes/s: bulk's 5 computed tokens take 5 s out and back in.
    shape = {"kv_bytes_per_token": 1, "swap_bandwidth": 2.0}
    result = Simulator(config(**shape, **PREEMPTIVE), VIP()).run(BULK_AND_VIP)
    assert result.swapped_tokens == 5
    # Back at 7.14, bulk prefills only its last token (1.01 s), then 17 decodes.
    assert finishes(result)[("bulk", 0)] == pytest.approx(7.14 + 1.01 + 17 * 1.1)


def test_same_seed_same_result_and_another_seed_differs() -> None:
    def run(seed: int) -> tuple[object, ...]:
        programs = generate("mixed", rate=0.5, programs=12, seed=seed)
        result = Simulator(SimConfig(engines=2), PolicyRegistry().create("atlas")).run(programs)
        m = dataclasses.replace(metrics(result), cpu_s=0.0)
        return (m, tuple(result.calls))

    assert run(3) == run(3)
    assert run(3) != run(4)


SMALL = {
    "small": WorkloadSpec(
        "small",
        "chain",
        calls=LengthDist(3.0, 0.5, high=10),
        new_tokens=LengthDist(60.0, 0.5, high=400),
        output_tokens=LengthDist(20.0, 0.5, high=100),
        tool_time_s=0.3,
    )
}


def test_littles_law_on_a_steady_state_run() -> None:
    rate, n = 4.0, 4000
    programs = generate("small", rate=rate, programs=n, seed=7, specs=SMALL)
    # Skip the warm-up and the drain: the window covers arrivals 500..3500.
    start, end = programs[500].arrival, programs[3500].arrival
    result = Simulator(SimConfig(window=(start, end)), FCFS()).run(programs)
    inside = [p for p in result.programs if start <= p.arrival < end]
    sojourn = sum(p.finished - p.arrival for p in inside) / len(inside)
    in_system = result.window_area / (end - start)
    # With the arrival rate measured in the window, L = lambda W up to edge effects (programs
    # straddling the window's ends: about L of them, each off by under W): ~W/T = 0.3% here.
    assert in_system == pytest.approx(len(inside) / (end - start) * sojourn, rel=0.02)
    # With the configured rate, the window's Poisson count adds sd 1/sqrt(3000) = 1.8%: 5% is
    # about three of those.
    assert in_system == pytest.approx(rate * sojourn, rel=0.05)


def test_a_recorded_trace_replays_to_the_same_programs(tmp_path: object) -> None:
    path = f"{tmp_path}/trace.jsonl"
    programs = generate("chatbot", rate=1.0, programs=5, seed=1)
    with TraceRecorder.open(path) as recorder:
        Simulator(SimConfig(), FCFS(), recorder=recorder).run(programs)
    replayed = {p.id: p for p in from_trace(read_trace(path))}
    for original in programs:
        again = replayed[original.id]
        assert [(c.prompt_tokens, c.output_tokens, c.parents) for c in again.calls] == [
            (c.prompt_tokens, c.output_tokens, c.parents) for c in original.calls
        ]
        assert [c.prefix_of for c in again.calls] == [c.prefix_of for c in original.calls]
    first = min(p.arrival for p in programs)
    assert replayed["p0"].arrival == pytest.approx(programs[0].arrival - first)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="engines"):
        Simulator(SimConfig(engines=0), FCFS())
    with pytest.raises(ValueError, match="rerank_interval_s"):
        Simulator(SimConfig(rerank_interval_s=0), FCFS())


@pytest.mark.parametrize(
    ("workload", "rate", "policy", "config"),
    [
        ("chatbot", 0.9, "plas", SimConfig()),  # near capacity: stretches cut by arrivals
        ("chatbot", 3.0, "mlfq", SimConfig()),  # overload: calls wait, re-rankings, preemptions
        ("lats", 0.2, "atlas", SimConfig(engines=2, balancer="least-loaded")),
        ("react", 0.8, "srpt", SimConfig(preempt=PreemptConfig(margin=0))),
        (
            "chatbot",
            0.6,
            "fcfs",
            SimConfig(
                shape=EngineShape(
                    chunked_prefill=False, prefix_cache=False, max_num_batched_tokens=32768
                )
            ),
        ),
        ("mixed", 0.3, "plas", SimConfig(shape=EngineShape(kv_capacity_tokens=60_000))),
    ],
)
def test_decode_stretches_change_nothing_but_the_cost(
    workload: str, rate: float, policy: str, config: SimConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    programs = generate(workload, rate=rate, programs=60, seed=5)
    stretched: list[int] = []
    original = EngineModel.decode_stretch

    def counting(self: EngineModel, now: float, until: float) -> StepResult | None:
        step = original(self, now, until)
        if step is not None:
            stretched.append(step.steps)
        return step

    monkeypatch.setattr(EngineModel, "decode_stretch", counting)

    def run(stretches: bool) -> tuple[object, ...]:
        sim_config = dataclasses.replace(config, decode_stretches=stretches)
        result = Simulator(sim_config, PolicyRegistry().create(policy)).run(programs)
        counts = (
            result.end,
            result.steps,
            result.generated_tokens,
            result.prefill_tokens,
            result.cached_tokens,
            result.engine_preemptions,
            result.priority_preemptions,
        )
        return counts, tuple(result.calls), tuple(result.programs)

    fast = run(True)
    assert stretched
    assert sum(stretched) > 100
    assert fast == run(False)  # every call's times and tokens, to the last bit
