"""Finding balancers by name, path and entry point, and refusing misshapen ones."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.kvhints.balancers import BUILTIN, BalancerRegistry, Decision, PrefixAware, Route, Tuning
from proxy.kvhints.load import EngineLoad


class Last:
    name = "last"

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        return Decision(len(engines) - 1, reason="last")

    def forget(self, *, program: str) -> None:
        pass


class NoForget:
    name = "broken"

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        return Decision(0)


class Positional:
    name = "positional"

    def choose(self, call: Route, engines: Sequence[EngineLoad], now: float, extra: int) -> Any:
        return 0

    def forget(self, program: str, /) -> None:
        pass


def entry_points(**found: type) -> Any:
    def lookup(group: str) -> list[Any]:
        assert group == "autellix.balancers"
        return [
            SimpleNamespace(name=n, value=f"pkg:{c.__name__}", load=lambda c=c: c)
            for n, c in found.items()
        ]

    return lookup


def test_builtins_by_name_with_their_tuning() -> None:
    assert sorted(BUILTIN) == ["autellix", "least-loaded", "prefix-aware", "round-robin"]
    balancer = BalancerRegistry().create("prefix-aware", Tuning(min_match_blocks=7))
    assert isinstance(balancer, PrefixAware)
    assert balancer.tuning.min_match_blocks == 7


def test_a_class_by_path_built_without_arguments() -> None:
    balancer = BalancerRegistry().create(f"{__name__}:Last")
    assert balancer.choose(call=Route("p", 1), engines=[EngineLoad(), EngineLoad()], now=0) == (
        Decision(1, reason="last")
    )


def test_an_entry_point() -> None:
    registry = BalancerRegistry(entry_points=entry_points(last=Last))
    assert registry.create("last").name == "last"
    assert "last" in registry.names()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown balancer 'nope'; known: autellix, least-loaded"):
        BalancerRegistry(entry_points=entry_points()).create("nope")


def test_errors_name_the_plugin_and_what_is_wrong() -> None:
    with pytest.raises(
        ConfigError, match=r"balancer plug-in '.*:NoForget'.*method forget\(\) is missing"
    ):
        BalancerRegistry().create(f"{__name__}:NoForget")
    with pytest.raises(ConfigError) as info:
        BalancerRegistry().create(f"{__name__}:Positional")
    message = str(info.value)
    assert "requires arguments the contract does not pass: ['extra']" in message
    assert "takes 'program' positionally only" in message
    with pytest.raises(ConfigError, match="cannot be loaded"):
        BalancerRegistry().create("no_such_module_xyz:Thing")
