"""The registry: names, paths, entry points, shape checks, typed configs."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

import pytest

from proxy.errors import ConfigError
from proxy.policies.atlas import ATLAS
from proxy.policies.base import BasePolicy, Priority
from proxy.policies.levels import LevelsConfig
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.registry import BUILTIN, PolicyRegistry, build_config
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program


def registry(*eps: tuple[str, str]) -> PolicyRegistry:
    found = [metadata.EntryPoint(name, value, "autellix.policies") for name, value in eps]
    return PolicyRegistry(entry_points=lambda group: found)


def test_builtins_by_name_with_default_configs() -> None:
    reg = registry()
    assert reg.names() == sorted(BUILTIN)
    policy = reg.create("plas")
    assert isinstance(policy, PLAS)
    assert policy.config == PLASConfig()


def test_settings_fill_the_typed_config() -> None:
    policy = registry().create(
        "atlas",
        {
            "levels": 4,
            "first": 1,  # an int where a float is expected is fine
            "beta": None,
            "tenant_floor": {"share": 0.5, "exempt": ["anonymous"]},
        },
    )
    assert isinstance(policy, ATLAS)
    assert policy.config.levels == 4
    assert policy.config.first == 1.0
    assert policy.config.beta is None
    assert policy.config.tenant_floor == TenantFloorConfig(share=0.5, exempt=("anonymous",))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"level": 4}, r"policy 'plas': unknown setting 'level'; known: levels, first"),
        ({"levels": "8"}, r"policy 'plas', setting 'levels': expected int, got '8'"),
        ({"levels": True}, r"setting 'levels': expected int"),
        ({"beta": "high"}, r"setting 'beta'"),
        ({"growth": 1.0}, r"policy 'plas': growth must be"),
        ({"tenant_floor": {"shares": 1}}, r"setting 'tenant_floor': unknown setting 'shares'"),
        ({"tenant_floor": 1}, r"setting 'tenant_floor'"),
        ({"tenant_floor": {"exempt": "x"}}, r"setting 'exempt': expected a list"),
    ],
)
def test_bad_settings_name_the_policy_and_the_setting(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        registry().create("plas", settings)


def test_policies_without_settings_refuse_any() -> None:
    with pytest.raises(ConfigError, match=r"policy 'fcfs': unknown setting 'levels'"):
        registry().create("fcfs", {"levels": 3})


def test_by_path() -> None:
    assert isinstance(registry().create("proxy.policies.plas:PLAS"), PLAS)
    with pytest.raises(ConfigError, match=r"'no.such.module:X' cannot be loaded"):
        registry().load_class("no.such.module:X")
    with pytest.raises(ConfigError, match=r"'proxy.policies.plas:Nope' cannot be loaded"):
        registry().load_class("proxy.policies.plas:Nope")
    with pytest.raises(ConfigError, match="is not a class"):
        registry().load_class("proxy.policies.levels:DEFAULT_BETA")


def test_unknown_name_lists_what_is_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown policy 'plass'; known: atlas, .*plas"):
        registry().create("plass")


def test_live_refuses_clairvoyant_policies() -> None:
    assert registry().create("srpt").live_ok is False
    with pytest.raises(ConfigError, match=r"'srpt' is clairvoyant.*simulator"):
        registry().create("srpt", live=True)
    assert registry().create("plas", live=True).live_ok


def test_register_is_per_instance() -> None:
    reg = registry()
    reg.register("mine", PLAS)
    assert "mine" in reg.names()
    assert isinstance(reg.create("mine"), PLAS)
    assert "mine" not in registry().names()


# Shape checks --------------------------------------------------------------------------------


class Good:
    name: ClassVar[str] = "good"
    live_ok: ClassVar[bool] = True

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(0)

    def priority(self, **kwargs: Any) -> Priority:  # **kwargs takes any keyword
        return Priority(0)

    def on_service(self, call: Call, program: Program, now: float) -> Priority:
        return Priority(0)

    def on_finish(self, *, call: Call, program: Program, now: float, extra: int = 0) -> None:
        pass


class NoName(Good):
    name = ""


class NotLiveFlag(Good):
    live_ok = "yes"  # type: ignore[assignment]


class MissingHook:
    name = "missing"
    live_ok = True

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(0)


class WrongKeyword(Good):
    def priority(self, *, call: Call, prog: Program, now: float) -> Priority:  # type: ignore[override]
        return Priority(0)


class PositionalOnly(Good):
    def on_service(self, call: Call, program: Program, now: float, /) -> Priority:
        return Priority(0)


class ExtraRequired(Good):
    def on_finish(self, *, call: Call, program: Program, now: float, engine: str) -> None:  # type: ignore[override]
        pass


class BadConfig(Good):
    Config: ClassVar[type] = dict


class UnknownScalar(Good):
    ranks_by = "tokens"


def test_a_well_shaped_plain_class_passes() -> None:
    reg = registry()
    reg.register("good", Good)
    assert reg.create("good").name == "good"


@pytest.mark.parametrize(
    ("cls", "problem"),
    [
        (NoName, "no 'name' string"),
        (NotLiveFlag, "no 'live_ok' bool"),
        (MissingHook, r"method on_arrival\(\) is missing"),
        (WrongKeyword, r"priority\(\) does not accept keyword argument 'program'"),
        (PositionalOnly, r"on_service\(\) takes 'call' positionally only"),
        (
            ExtraRequired,
            r"on_finish\(\) requires arguments the contract does not pass: \['engine'\]",
        ),
        (BadConfig, "its 'Config' is not a dataclass"),
        (UnknownScalar, "its 'ranks_by' is not one of 'service', 'critical_path'"),
    ],
)
def test_misshapen_plugins_are_named_with_what_is_wrong(cls: type, problem: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"policy plug-in 'x' \(.*{cls.__name__}\) is not a Policy: .*{problem}"
    ):
        registry().register("x", cls)


@dataclass(frozen=True)
class _Settings:
    fail: bool = False


class Fussy(BasePolicy):
    name = "fussy"
    Config = _Settings

    def __init__(self, config: _Settings) -> None:
        if config.fail:
            raise RuntimeError("no thanks")

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return Priority(0)


def test_constructor_failures_become_config_errors() -> None:
    reg = registry()
    reg.register("fussy", Fussy)
    assert reg.create("fussy").name == "fussy"
    with pytest.raises(ConfigError, match="policy 'fussy' cannot be built: no thanks"):
        reg.create("fussy", {"fail": True})


def test_build_config_alone() -> None:
    assert build_config(LevelsConfig, {"levels": 2}, "mine") == LevelsConfig(levels=2)
    with pytest.raises(ConfigError, match="policy 'mine': its Config is not a dataclass"):
        build_config(dict, {}, "mine")
    with pytest.raises(ConfigError, match="settings must be a mapping"):
        build_config(LevelsConfig, [], "mine")  # type: ignore[arg-type]


# Entry points (objects here; test_entry_points.py discovers a real installed distribution) --


def test_entry_points_by_name() -> None:
    reg = registry(("mine", "proxy.policies.plas:PLAS"))
    assert reg.available()["mine"] == "entry point proxy.policies.plas:PLAS"
    assert isinstance(reg.create("mine", {"levels": 2}), PLAS)


def test_builtin_names_win_over_entry_points() -> None:
    reg = registry(("fcfs", "proxy.policies.plas:PLAS"))
    assert not isinstance(reg.create("fcfs"), PLAS)
    assert reg.available()["fcfs"].startswith("built-in")


def test_broken_and_conflicting_entry_points() -> None:
    with pytest.raises(
        ConfigError, match=r"plug-in 'bad' \(entry point nowhere:X\) cannot be loaded"
    ):
        registry(("bad", "nowhere:X")).create("bad")
    with pytest.raises(ConfigError, match=r"'twice' is claimed by two entry points.*a:A and b:B"):
        registry(("twice", "a:A"), ("twice", "b:B")).create("twice")
    with pytest.raises(ConfigError, match=r"plug-in 'odd' .* is not a Policy"):
        registry(("odd", "proxy.records:Call")).create("odd")


def test_default_entry_points_come_from_the_environment() -> None:
    assert set(BUILTIN) <= set(PolicyRegistry().names())
