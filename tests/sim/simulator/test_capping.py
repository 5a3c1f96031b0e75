"""The admission cap on the simulated engine: at most k calls run, the policy's best; a better
waiting call preempts a worse running one under the core's rule; fcfs is left alone by the
adaptive cap; the adaptive cap is fed by the engine model's own steps."""

from __future__ import annotations

import dataclasses

from proxy.core.concurrency import CapConfig, for_policy
from proxy.core.retention import RetentionConfig
from proxy.policies.fcfs import FCFS
from proxy.policies.registry import PolicyRegistry
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.policy_queue import PreemptConfig
from proxy.sim.simulator.results import metrics
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.workloads import CallSpec, ProgramSpec, generate
from tests.sim.simulator.test_des import config


def single(pid: str, prompt: int, output: int, at: float) -> ProgramSpec:
    return ProgramSpec(pid, "test", at, (CallSpec(0, prompt, output),))


def srpt() -> object:
    return PolicyRegistry().create("srpt", {})


def peak_running(sim: Simulator, programs: list[ProgramSpec]) -> tuple[int, object]:
    """Run ``sim``; the most calls that ran at once, and the result."""
    peak = 0
    original = sim._step_end

    def watch(engine, step, now):  # type: ignore[no-untyped-def]
        nonlocal peak
        peak = max(peak, engine.model.num_running + len(step.finished))  # those that ran
        original(engine, step, now)

    sim._step_end = watch  # type: ignore[method-assign]
    result = sim.run(programs)
    return peak, result


def test_fixed_cap_runs_at_most_k_and_admits_the_shortest_first() -> None:
    # Four calls arrive together on an engine with four sequence slots, capped at two: the two
    # shortest run first under SRPT, the longest last.
    programs = [
        single("long", 4, 30, 0.0),
        single("mid", 4, 12, 0.0),
        single("short", 4, 2, 0.0),
        single("tiny", 4, 1, 0.0),
    ]
    capped = config(
        cap=CapConfig(mode="fixed", k=2), kv_capacity_tokens=256, max_num_batched_tokens=64
    )
    peak, result = peak_running(Simulator(capped, srpt()), programs)  # type: ignore[arg-type]
    assert peak == 2
    done = sorted(result.calls, key=lambda c: c.finished)  # type: ignore[attr-defined]
    assert [c.program for c in done] == ["tiny", "short", "mid", "long"]
    free = Simulator(config(kv_capacity_tokens=256, max_num_batched_tokens=64), srpt())  # type: ignore[arg-type]
    assert peak_running(free, programs)[0] == 4  # the engine's own limit


def test_a_better_waiting_call_preempts_under_the_cap() -> None:
    # Two long calls fill a cap of two (the engine has four slots); a short one arrives later.
    # SRPT ranks by remaining service: with margin 0 the short call takes a long one's place
    # once it has had its quantum, though the engine itself had room.
    programs = [single("a", 4, 40, 0.0), single("b", 4, 40, 0.0), single("c", 4, 2, 5.0)]
    rule = PreemptConfig(margin=0, min_quantum_s=0.0)
    capped = config(
        cap=CapConfig(mode="fixed", k=2), preempt=rule, kv_capacity_tokens=256,
        preemption="recompute",
    )  # fmt: skip
    result = Simulator(capped, srpt()).run(programs)  # type: ignore[arg-type]
    assert result.priority_preemptions == 1
    finished = {c.program: c.finished for c in result.calls}
    assert finished["c"] < min(finished["a"], finished["b"])
    none = dataclasses.replace(capped, preempt=PreemptConfig(preempt=False))
    waited = Simulator(none, srpt()).run(programs)  # type: ignore[arg-type]
    assert waited.priority_preemptions == 0
    assert {c.program: c.finished for c in waited.calls}["c"] > finished["c"]


def test_adaptive_cap_leaves_fcfs_as_it_was() -> None:
    assert for_policy(CapConfig(mode="adaptive"), FCFS()).alpha == 0.0
    assert for_policy(CapConfig(mode="adaptive"), srpt()).alpha > 0.0
    programs = generate("chatbot", rate=1.0, programs=60, seed=1)
    off = Simulator(SimConfig(), FCFS()).run(programs)
    on = Simulator(SimConfig(cap=CapConfig(mode="adaptive")), FCFS()).run(programs)
    assert metrics(on).latency_mean == metrics(off).latency_mean


def test_adaptive_cap_moves_with_the_engines_own_steps() -> None:
    programs = generate("chatbot", rate=1.0, programs=150, seed=2)
    sim = Simulator(SimConfig(cap=CapConfig(mode="adaptive")), srpt())  # type: ignore[arg-type]
    sim.run(programs)
    cap = sim.engines[0].cap
    assert cap is not None
    controller = cap.controller
    assert controller.moves > 0
    assert controller.fit is not None
    # The fitted base step is the A100 preset's weight read (10.2 ms), give or take the
    # prefill and context the line folds in.
    assert 0.005 < controller.fit.base_s < 0.03
    assert cap.mean_cap < 256
    assert cap.mean_running <= cap.mean_cap


def test_auto_caps_plas_only_where_retention_follows_the_policy() -> None:
    plas = PolicyRegistry().create("plas", {})
    auto = CapConfig(mode="auto")
    lru = Simulator(SimConfig(cap=auto), plas)
    assert lru.engines[0].cap is None
    ranked = SimConfig(cap=auto, retention=RetentionConfig(evict="rank"))
    cap = Simulator(ranked, plas).engines[0].cap
    assert cap is not None
    assert cap.controller.adaptive
    assert Simulator(SimConfig(cap=auto), srpt()).engines[0].cap is not None  # type: ignore[arg-type]
