"""Engine choice in the simulator: the proxy's own balancer objects on simulated load."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.errors import ConfigError
from proxy.kvhints.balancers import AutellixBalancer, Decision, PrefixAware, Route, Tuning
from proxy.kvhints.load import EngineLoad
from proxy.policies.fcfs import FCFS
from proxy.sim.simulator.balancer import make_balancer
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.workloads import CallSpec, ProgramSpec


class Recording:
    """Least loaded, recording what it saw: the simulator's view of each call."""

    name = "recording"
    seen: list[tuple[Route, list[EngineLoad]]] = []

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        Recording.seen.append((call, list(engines)))
        return Decision(min(range(len(engines)), key=lambda i: engines[i].queued))

    def forget(self, *, program: str) -> None:
        pass


def test_the_simulator_builds_the_proxys_balancers() -> None:
    assert isinstance(make_balancer("autellix"), AutellixBalancer)
    balancer = make_balancer("prefix-aware", Tuning(min_match_blocks=3))
    assert isinstance(balancer, PrefixAware)
    assert balancer.tuning.min_match_blocks == 3
    with pytest.raises(ConfigError, match="unknown balancer 'nope'"):
        make_balancer("nope")


def chat(pid: str, turns: int, prompt: int) -> ProgramSpec:
    """A conversation: each call continues the previous one's context."""
    calls = tuple(
        CallSpec(
            index=i,
            prompt_tokens=prompt * (i + 1),
            output_tokens=50,
            parents=(i - 1,) if i else (),
            think_s=0.5,
            prefix_of=i - 1 if i else None,
            prefix_tokens=prompt * i + 50 * i if i else 0,
        )
        for i in range(turns)
    )
    return ProgramSpec(id=pid, kind="chatbot", arrival=0.0, calls=calls)


def test_a_programs_affinity_and_its_cached_context_reach_the_balancer() -> None:
    Recording.seen = []
    programs = [chat("a", 3, 3000), chat("b", 3, 3000)]
    config = SimConfig(engines=2, balancer=f"{__name__}:Recording")
    Simulator(config, FCFS()).run(programs)
    later = [(route, loads) for route, loads in Recording.seen if route.affinity is not None]
    assert len(later) == 4  # every call but each program's first
    for route, loads in later:
        held = {load.name: load.cached for load in loads}
        # Its previous call's context is cached on the program's engine, nowhere else.
        assert held[route.affinity] > 0
        assert sum(held.values()) == held[route.affinity]


def test_autellix_keeps_a_programs_long_calls_on_one_engine() -> None:
    programs = [chat(f"p{i}", 4, 2500) for i in range(6)]
    config = SimConfig(engines=3, balancer="autellix")
    result = Simulator(config, FCFS()).run(programs)
    engines: dict[str, set[int]] = {}
    for call in result.calls:
        engines.setdefault(call.program, set()).add(call.engine)
    assert all(len(used) == 1 for used in engines.values()), engines
    assert len(set().union(*engines.values())) > 1  # programs themselves spread
