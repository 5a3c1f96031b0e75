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
from typing import Any

from proxy.errors import ConfigError
from proxy.kvhints.balancers.autellix import AutellixBalancer
from proxy.kvhints.balancers.base import Balancer, Tuning
from proxy.kvhints.balancers.prefix import PrefixAware
from proxy.kvhints.balancers.simple import LeastLoaded, RoundRobin
from proxy.plugins import PluginRegistry, hook_problems, where

ENTRY_POINT_GROUP = "autellix.balancers"

BUILTIN: Mapping[str, type] = types.MappingProxyType(
    {cls.name: cls for cls in (RoundRobin, LeastLoaded, AutellixBalancer, PrefixAware)}
)

_HOOKS: Mapping[str, tuple[str, ...]] = {
    "choose": ("call", "engines", "now"),
    "forget": ("program",),
}


class BalancerRegistry(PluginRegistry):
    """Finds, checks and builds balancers (``proxy.plugins.PluginRegistry``); no module-level
    state (each app builds its own). ``entry_points`` is injectable for tests."""

    def __init__(
        self,
        *,
        builtins: Mapping[str, type] = BUILTIN,
        group: str = ENTRY_POINT_GROUP,
        entry_points: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__(
            kind="balancer",
            builtins=builtins,
            group=group,
            check=check_balancer_class,
            entry_points=entry_points,
        )

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
        problems.extend(hook_problems(cls, hook, keywords))
    if problems:
        raise ConfigError(
            f"balancer plug-in {ref!r} ({where(cls)}) is not a Balancer: " + "; ".join(problems)
        )
