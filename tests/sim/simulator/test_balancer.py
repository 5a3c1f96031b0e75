"""Engine choice in the simulator: round-robin, least-loaded, Autellix's, plug-ins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from proxy.errors import ConfigError
from proxy.sim.simulator.balancer import AUTELLIX_THRESHOLD, EngineLoad, make_balancer


@dataclass
class Load:
    num_running: int = 0
    num_waiting: int = 0
    kv_usage: float = 0.0


def choose(name: str, engines: Sequence[EngineLoad], program: str = "p", prompt: int = 10) -> int:
    return make_balancer(name).choose(
        program=program, prompt_tokens=prompt, engines=engines, now=0.0
    )


def test_round_robin_cycles_blind_to_load() -> None:
    balancer = make_balancer("round-robin")
    engines = [Load(9), Load(0), Load(0)]
    picks = [
        balancer.choose(program="p", prompt_tokens=1, engines=engines, now=0.0) for _ in range(4)
    ]
    assert picks == [0, 1, 2, 0]


def test_least_loaded_counts_requests_then_kv() -> None:
    assert choose("least-loaded", [Load(3, 1), Load(2, 1), Load(1, 3)]) == 1
    assert choose("least-loaded", [Load(2, 0, 0.9), Load(1, 1, 0.2)]) == 1


def test_autellix_short_calls_go_least_loaded_long_ones_stick() -> None:
    balancer = make_balancer("autellix")
    engines = [Load(5), Load(1)]

    def pick(program: str, prompt: int) -> int:
        return balancer.choose(program=program, prompt_tokens=prompt, engines=engines, now=0.0)

    long = AUTELLIX_THRESHOLD + 1
    assert pick("p", long) == 1  # no engine yet: least loaded, recorded
    engines[1].num_running = 50
    assert pick("p", long) == 1  # sticky for its KV cache
    assert pick("p", AUTELLIX_THRESHOLD) == 0  # short: least loaded
    assert pick("q", long) == 0
    balancer.forget("p")
    assert pick("p", long) == 0
    assert balancer.choose(program="p", prompt_tokens=long, engines=[Load()], now=0.0) == 0


class Last:
    def choose(
        self, *, program: str, prompt_tokens: int, engines: Sequence[EngineLoad], now: float
    ) -> int:
        return len(engines) - 1

    def forget(self, program: str) -> None:
        pass


class Broken:
    pass


def test_plugins_load_by_path_and_are_checked() -> None:
    assert choose(f"{__name__}:Last", [Load(), Load(), Load()]) == 2
    with pytest.raises(ConfigError, match=r"Broken.*missing: \['choose', 'forget'\]"):
        make_balancer(f"{__name__}:Broken")
    with pytest.raises(ConfigError, match="unknown balancer 'nope'"):
        make_balancer("nope")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        make_balancer(f"{__name__}:Missing")
