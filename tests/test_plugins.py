"""The one plug-in registry that policies and balancers share: lookup order, checks, errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from proxy.errors import ConfigError
from proxy.plugins import PluginRegistry, hook_problems


class Good:
    name = "good"

    def run(self, *, job: int) -> int:
        return job


class Other(Good):
    name = "other"


def check(cls: type, ref: str) -> None:
    problems = hook_problems(cls, "run", ("job",))
    if problems:
        raise ConfigError(f"widget {ref!r}: " + "; ".join(problems))


def entry_points(**found: object) -> Any:
    def lookup(group: str) -> list[Any]:
        assert group == "test.widgets"
        return [
            SimpleNamespace(name=n, value=f"pkg:{n}", load=lambda c=c: c) for n, c in found.items()
        ]

    return lookup


def registry(**found: object) -> PluginRegistry:
    return PluginRegistry(
        kind="widget",
        builtins={"good": Good},
        group="test.widgets",
        check=check,
        entry_points=entry_points(**found),
    )


def test_registered_names_come_before_builtins_and_entry_points() -> None:
    reg = registry(good=Other, ep=Other)
    assert reg.load_class("good") is Good
    assert reg.load_class("ep") is Other
    reg.register("good", Other)
    assert reg.load_class("good") is Other
    assert reg.available()["ep"] == "entry point pkg:ep"
    assert reg.names() == ["ep", "good"]


def test_errors_name_the_kind_and_the_reason() -> None:
    with pytest.raises(ConfigError, match="unknown widget 'nope'; known: good"):
        registry().load_class("nope")
    with pytest.raises(ConfigError, match=r"widget plug-in 'fn' .* is not a class"):
        registry(fn=len).load_class("fn")
    with pytest.raises(ConfigError, match="does not accept keyword argument 'job'"):
        registry().register("bad", type("Bad", (), {"run": lambda self, other: 0}))
    with pytest.raises(ConfigError, match="widget 'no_such_module_xyz:W' cannot be loaded"):
        registry().load_class("no_such_module_xyz:W")


def test_two_entry_points_claiming_a_name_are_refused() -> None:
    def lookup(group: str) -> list[Any]:
        return [
            SimpleNamespace(name="dup", value="a:A", load=lambda: Good),
            SimpleNamespace(name="dup", value="b:B", load=lambda: Good),
        ]

    reg = PluginRegistry(kind="widget", builtins={}, group="g", check=check, entry_points=lookup)
    with pytest.raises(ConfigError, match="'dup' is claimed by two entry points"):
        reg.load_class("dup")
