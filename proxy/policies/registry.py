"""Finding policies: built-in names, ``package.module:Class`` paths, and entry points in the
group ``autellix.policies``. A plug-in's shape is checked when it is loaded, and its settings
are checked against its typed config, with errors that name the plug-in and what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from proxy.errors import ConfigError
from proxy.policies.base import Policy

ENTRY_POINT_GROUP = "autellix.policies"

BUILTIN: Mapping[str, str] = types.MappingProxyType(
    {
        "fcfs": "proxy.policies.fcfs:FCFS",
        "las": "proxy.policies.las:LAS",
        "mlfq": "proxy.policies.mlfq:MLFQ",
        "plas": "proxy.policies.plas:PLAS",
        "atlas": "proxy.policies.atlas:ATLAS",
        "srpt": "proxy.policies.srpt:SRPT",
    }
)

_HOOKS = ("on_arrival", "priority", "on_service", "on_finish")
_HOOK_KEYWORDS = ("call", "program", "now")


def _import(path: str, what: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"policy {what!r}: expected a name, package.module:Class or an entry point"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"policy {what!r}: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"policy {what!r}: module {module_name!r} has no {attr!r}") from None


def check_shape(obj: Any, what: str) -> None:
    """Raise ConfigError unless ``obj`` (a class or an instance) has the Policy contract's shape."""
    problems = []
    if not isinstance(getattr(obj, "name", None), str):
        problems.append("no string attribute 'name'")
    for hook in _HOOKS:
        fn = getattr(obj, hook, None)
        if not callable(fn):
            problems.append(f"no method {hook}()")
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        missing = [k for k in _HOOK_KEYWORDS if k not in params]
        if missing:
            problems.append(f"{hook}() does not take keyword argument(s) {', '.join(missing)}")
    if problems:
        raise ConfigError(f"policy {what!r} is not a valid policy: " + "; ".join(problems))


def _dataclass_type(hint: Any) -> type | None:
    """The dataclass in a hint such as ``TenantFloorConfig | None``, if any."""
    candidates = typing.get_args(hint) or (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def build_config(config_cls: type, values: Mapping[str, Any], what: str) -> Any:
    """Fill a policy's typed config (a dataclass) from a plain mapping, rejecting unknown keys."""
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"policy {what!r}: its Config is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ConfigError(
            f"policy {what!r} has no setting {', '.join(map(repr, unknown))}; it takes: {known}"
        )
    hints = typing.get_type_hints(config_cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        nested = _dataclass_type(hints.get(key))
        if nested is not None and isinstance(value, Mapping):
            value = build_config(nested, value, f"{what}.{key}")
        kwargs[key] = value
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"policy {what!r}: bad settings: {exc}") from exc


class PolicyRegistry:
    """Resolves policy references. Per instance: ``register`` adds names for this registry only."""

    def __init__(self, *, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._extra: dict[str, type] = {}

    def register(self, name: str, cls: type) -> None:
        check_shape(cls, name)
        self._extra[name] = cls

    def names(self) -> list[str]:
        plugins = [ep.name for ep in entry_points(group=self._group)]
        return sorted({*BUILTIN, *self._extra, *plugins})

    def load_class(self, ref: str) -> type:
        if ref in self._extra:
            return self._extra[ref]
        if ref in BUILTIN:
            obj = _import(BUILTIN[ref], ref)
        elif ":" in ref:
            obj = _import(ref, ref)
        else:
            found = [ep for ep in entry_points(group=self._group) if ep.name == ref]
            if not found:
                raise ConfigError(f"unknown policy {ref!r}; known: {', '.join(self.names())}")
            try:
                obj = found[0].load()
            except Exception as exc:
                raise ConfigError(
                    f"policy {ref!r} (entry point {found[0].value}) failed to load: {exc}"
                ) from exc
        if not isinstance(obj, type):
            raise ConfigError(f"policy {ref!r} is not a class")
        check_shape(obj, ref)
        return obj

    def create(self, ref: str, settings: Mapping[str, Any] | None = None) -> Policy:
        """A policy object for ``ref``, configured from ``settings`` (its Config's fields)."""
        cls = self.load_class(ref)
        config_cls = getattr(cls, "Config", None)
        settings = settings or {}
        try:
            if config_cls is not None:
                policy = cls(build_config(config_cls, settings, ref))
            elif settings:
                raise ConfigError(
                    f"policy {ref!r} takes no settings; got {', '.join(sorted(settings))}"
                )
            else:
                policy = cls()
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"policy {ref!r} could not be created: {exc}") from exc
        check_shape(policy, ref)
        if not isinstance(getattr(policy, "live_ok", True), bool):
            raise ConfigError(f"policy {ref!r}: live_ok must be a bool")
        return typing.cast(Policy, policy)
