"""Policies by name: built-ins, ``package.module:Class`` paths, and entry points in the
``autellix.policies`` group. A plug-in's shape is checked when it is loaded, and its typed
config is filled from a plain mapping (the config file's ``policy_config``), with errors that
name the plug-in and what is wrong (DESIGN.md, rule 8).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from proxy.errors import ConfigError
from proxy.plugins import PluginRegistry, hook_problems, where
from proxy.policies.atlas import ATLAS
from proxy.policies.base import RANKS_BY, Policy
from proxy.policies.fcfs import FCFS
from proxy.policies.las import LAS
from proxy.policies.llmd_las import LLMDLAS
from proxy.policies.mlfq import MLFQ
from proxy.policies.plas import PLAS
from proxy.policies.program_fcfs import ProgramFCFS
from proxy.policies.srpt import SRPT
from proxy.policies.turn_priority import TurnPriority

ENTRY_POINT_GROUP = "autellix.policies"

BUILTIN: Mapping[str, type] = types.MappingProxyType(
    {
        cls.name: cls
        for cls in (FCFS, LAS, MLFQ, PLAS, ATLAS, SRPT, ProgramFCFS, LLMDLAS, TurnPriority)
    }
)

_HOOKS = ("on_arrival", "priority", "on_service", "on_finish")
_HOOK_KEYWORDS = ("call", "program", "now")


class PolicyRegistry(PluginRegistry):
    """Finds, checks and builds policies (``proxy.plugins.PluginRegistry``). No module-level
    state: each app (or test) builds its own.

    ``builtins``: name -> class (default: the built-in policies); ``group``: the entry-point
    group searched for plug-ins; ``entry_points``: where entry points come from (default
    ``importlib.metadata.entry_points``; injectable for tests). Lookup order for a bare name:
    registered, built-in, entry point.
    """

    def __init__(
        self,
        *,
        builtins: Mapping[str, type] = BUILTIN,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__(
            kind="policy",
            builtins=builtins,
            group=group,
            check=check_policy_class,
            entry_points=entry_points,
        )

    def create(
        self, ref: str, config: Mapping[str, object] | None = None, *, live: bool = False
    ) -> Policy:
        """Load ``ref``, fill its config from ``config`` and build it. ``live=True`` (the
        proxy) refuses clairvoyant policies."""
        cls = self.load_class(ref)
        settings = _settings(cls, config or {}, ref)
        try:
            policy = cls() if settings is None else cls(settings)
        except Exception as exc:  # a plug-in's constructor can fail in any way
            raise ConfigError(f"policy {ref!r} cannot be built: {exc}") from exc
        if not isinstance(policy, Policy):
            raise ConfigError(f"policy {ref!r}: the built object does not satisfy Policy")
        if live and not policy.live_ok:
            raise ConfigError(
                f"policy {ref!r} is clairvoyant (live_ok is False): it needs the true remaining "
                "work of calls, which only the simulator knows; use it in the simulator"
            )
        return policy


def check_policy_class(cls: type, ref: str) -> None:
    """Raise ConfigError unless ``cls`` has the Policy shape: a ``name`` string, a ``live_ok``
    bool, a known ``ranks_by`` if it declares one, the four hooks taking ``call``, ``program`` and ``now`` by keyword and nothing else
    required, and a usable ``Config`` (a dataclass) if it declares one."""
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("it has no 'name' string attribute")
    if not isinstance(getattr(cls, "live_ok", None), bool):
        problems.append("it has no 'live_ok' bool attribute")
    if getattr(cls, "ranks_by", "service") not in RANKS_BY:
        problems.append(f"its 'ranks_by' is not one of {', '.join(map(repr, RANKS_BY))}")
    for hook in _HOOKS:
        problems.extend(hook_problems(cls, hook, _HOOK_KEYWORDS))
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None and not (
        isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)
    ):
        problems.append("its 'Config' is not a dataclass")
    if problems:
        raise ConfigError(
            f"policy plug-in {ref!r} ({where(cls)}) is not a Policy: " + "; ".join(problems)
        )


def _settings(cls: type, data: Mapping[str, object], ref: str) -> object | None:
    """The policy's typed config filled from ``data``; None for a class without ``Config``
    (then ``data`` must be empty)."""
    config_cls = getattr(cls, "Config", None)
    if config_cls is None:
        if data:
            raise ConfigError(f"policy {ref!r} takes no settings; got: {', '.join(data)}")
        return None
    return build_config(config_cls, data, ref)


def build_config(config_cls: type, data: Mapping[str, object], what: str) -> object:
    """A policy's typed config (a dataclass) filled from a plain mapping, such as the config
    file's policy settings. Unknown keys and ill-typed values are rejected with an error that
    names the policy and the setting."""
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise ConfigError(f"policy {what!r}: its Config is not a dataclass")
    return _fill(config_cls, data, f"policy {what!r}")


def _fill(config_cls: type, data: Mapping[str, object], where: str) -> object:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: settings must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting {unknown[0]!r}; known: {', '.join(fields) or '(none)'}"
        )
    hints = typing.get_type_hints(config_cls)
    values = {
        key: _convert(hints[key], val, f"{where}, setting {key!r}") for key, val in data.items()
    }
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: object, where: str) -> object:
    """Check ``value`` against a config field's type (the few shapes configs use: bool, int,
    float, str, optional, tuple of one type, dict, nested dataclass)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits no option")
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(item_hint, item, where) for item in value)
    if origin is dict:
        key_hint, value_hint = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            _convert(key_hint, k, where): _convert(value_hint, v, where) for k, v in value.items()
        }
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _fill(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{where}: the config type {hint!r} is not supported")
    raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
