"""Balancers by name: built-ins, ``package.module:Class`` paths, and entry points in the
``autellix.balancers`` group. A plug-in's shape is checked when it is loaded, with errors that
name the plug-in and what is wrong (DESIGN.md, rule 8).

A balancer class is built with the ``Tuning`` (the config's ``routing`` settings) when its
constructor takes a ``tuning`` argument, else with no arguments.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from proxy.errors import ConfigError
from proxy.kvhints.balancers.autellix import AutellixBalancer
from proxy.kvhints.balancers.base import Balancer, Tuning
from proxy.kvhints.balancers.prefix import PrefixAware
from proxy.kvhints.balancers.simple import LeastLoaded, RoundRobin
from proxy.plugins import import_class

ENTRY_POINT_GROUP = "autellix.balancers"

BUILTIN: Mapping[str, type] = types.MappingProxyType(
    {cls.name: cls for cls in (RoundRobin, LeastLoaded, AutellixBalancer, PrefixAware)}
)

_HOOKS: Mapping[str, tuple[str, ...]] = {
    "choose": ("call", "engines", "now"),
    "forget": ("program",),
}


class BalancerRegistry:
    """Finds, checks and builds balancers; no module-level state (each app builds its own).
    ``entry_points`` is injectable for tests."""

    def __init__(
        self,
        *,
        builtins: Mapping[str, type] = BUILTIN,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Callable[[str], Any] | None = None,
    ) -> None:
        self._builtins = builtins
        self._group = group
        self._entry_points = entry_points or (lambda g: metadata.entry_points(group=g))

    def names(self) -> list[str]:
        return sorted({*self._builtins, *(ep.name for ep in self._entry_points(self._group))})

    def load_class(self, ref: str) -> type:
        if ref in self._builtins:
            cls = self._builtins[ref]
        elif ":" in ref:
            cls = import_class(ref, "balancer")
        else:
            found = [ep for ep in self._entry_points(self._group) if ep.name == ref]
            if not found:
                raise ConfigError(
                    f"unknown balancer {ref!r}; known: {', '.join(self.names())}; "
                    "or give package.module:Class"
                )
            if len({ep.value for ep in found}) > 1:
                raise ConfigError(
                    f"balancer plug-in name {ref!r} is claimed by two entry points in group "
                    f"{self._group!r}: {', '.join(ep.value for ep in found)}; uninstall one"
                )
            try:
                cls = found[0].load()
            except Exception as exc:  # a plug-in can fail to import in any way
                raise ConfigError(
                    f"balancer plug-in {ref!r} (entry point {found[0].value}) cannot be "
                    f"loaded: {exc}"
                ) from exc
        check_balancer_class(cls, ref)
        return cls

    def create(self, ref: str, tuning: Tuning | None = None) -> Balancer:
        """Load ``ref`` and build it (with ``tuning`` if its constructor takes one)."""
        cls = self.load_class(ref)
        try:
            takes = "tuning" in inspect.signature(cls).parameters
        except (TypeError, ValueError):
            takes = False
        try:
            balancer = cls(tuning=tuning or Tuning()) if takes else cls()
        except Exception as exc:  # a plug-in's constructor can fail in any way
            raise ConfigError(f"balancer {ref!r} cannot be built: {exc}") from exc
        if not isinstance(balancer, Balancer):
            raise ConfigError(f"balancer {ref!r}: the built object does not satisfy Balancer")
        return balancer


def check_balancer_class(cls: object, ref: str) -> None:
    """Raise ConfigError unless ``cls`` is a class with a ``name`` string and the hooks
    ``choose(*, call, engines, now)`` and ``forget(*, program)``, taking those by keyword and
    requiring nothing else."""
    if not isinstance(cls, type):
        raise ConfigError(f"balancer plug-in {ref!r} is not a class")
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        problems.append("it has no 'name' string attribute")
    for hook, keywords in _HOOKS.items():
        problems.extend(_hook_problems(cls, hook, keywords))
    if problems:
        where = f"{cls.__module__}:{cls.__qualname__}"
        raise ConfigError(
            f"balancer plug-in {ref!r} ({where}) is not a Balancer: " + "; ".join(problems)
        )


def _hook_problems(cls: type, hook: str, keywords: tuple[str, ...]) -> list[str]:
    method = getattr(cls, hook, None)
    if not callable(method):
        return [f"method {hook}() is missing"]
    try:
        params = list(inspect.signature(method).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):
        return []
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    by_name = {p.name: p for p in params}
    problems = []
    for keyword in keywords:
        param = by_name.get(keyword)
        if param is None and not takes_any:
            problems.append(f"method {hook}() does not accept keyword argument {keyword!r}")
        elif param is not None and param.kind is param.POSITIONAL_ONLY:
            problems.append(f"method {hook}() takes {keyword!r} positionally only")
    extra = [
        p.name
        for p in params
        if p.name not in keywords
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if extra:
        problems.append(f"method {hook}() requires arguments the contract does not pass: {extra}")
    return problems
