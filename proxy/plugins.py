"""Loading plug-ins (policies, balancers, backends): by a ``package.module:Class`` path, and, for
the kinds with a registry, by name among built-ins, registered classes and entry points. One
mechanism for every kind, so each checks and reports a plug-in the same way (DESIGN.md, rule 8).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from proxy.errors import ConfigError


def import_class(ref: str, what: str) -> type:
    """The class at ``package.module:Class`` (nested attributes with dots); ``what`` names the
    kind of plug-in in the error, which also names ``ref`` and the reason."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} {ref!r}: expected package.module:Class")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # ImportError, AttributeError, or the module's own failure
        raise ConfigError(f"{what} {ref!r} cannot be loaded: {exc}") from exc
    if not isinstance(obj, type):
        raise ConfigError(f"{what} {ref!r} is not a class")
    return obj


def where(cls: type) -> str:
    """Where a class is defined, as a ``package.module:Class`` path."""
    return f"{cls.__module__}:{cls.__qualname__}"


def hook_problems(cls: type, hook: str, keywords: tuple[str, ...]) -> list[str]:
    """What keeps ``cls.hook`` from being called with ``keywords`` by keyword and nothing else:
    a missing method, a keyword it does not take or takes positionally only, and arguments it
    requires beyond them. Empty when it fits (or cannot be inspected: a C callable)."""
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


class PluginRegistry:
    """Finds and checks the classes of one kind of plug-in by name. No module-level state: each
    app (or test) builds its own, and ``register`` adds names to this instance only.

    ``kind`` names the plug-in kind in errors ("policy", "balancer"); ``builtins``: name ->
    class; ``group``: the entry-point group searched for plug-ins; ``check(cls, ref)`` raises
    ConfigError unless ``cls`` has the kind's shape; ``entry_points``: where entry points come
    from (default ``importlib.metadata.entry_points``; injectable for tests). Lookup order for
    a bare name: registered, built-in, entry point; a name with ``:`` is a class path.
    """

    def __init__(
        self,
        *,
        kind: str,
        builtins: Mapping[str, type],
        group: str,
        check: Callable[[type, str], None],
        entry_points: Callable[[str], Any] | None = None,
    ) -> None:
        self._kind = kind
        self._builtins = builtins
        self._group = group
        self._check = check
        self._entry_points = entry_points or (lambda g: metadata.entry_points(group=g))
        self._extra: dict[str, type] = {}

    def register(self, name: str, cls: type) -> None:
        """Make ``cls`` available as ``name`` in this registry (checked now)."""
        self._check(cls, name)
        self._extra[name] = cls

    def names(self) -> list[str]:
        return sorted(self.available())

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in self._entry_points(self._group):
            other = found.get(ep.name)
            if other is not None and other.value != ep.value:
                raise ConfigError(
                    f"{self._kind} plug-in name {ep.name!r} is claimed by two entry points in "
                    f"group {self._group!r}: {other.value} and {ep.value}; uninstall one"
                )
            found[ep.name] = ep
        return found

    def available(self) -> dict[str, str]:
        """Every plug-in known by name, and where it comes from."""
        out = {name: f"registered {where(cls)}" for name, cls in self._extra.items()}
        for name, cls in self._builtins.items():
            out.setdefault(name, f"built-in {where(cls)}")
        for name, ep in self._plugins().items():
            out.setdefault(name, f"entry point {ep.value}")
        return out

    def load_class(self, ref: str) -> type:
        """The class for ``ref`` (a name or ``package.module:Class``), checked."""
        if ref in self._extra:
            return self._extra[ref]
        if ref in self._builtins:
            cls = self._builtins[ref]
        elif ":" in ref:
            cls = import_class(ref, self._kind)
        else:
            ep = self._plugins().get(ref)
            if ep is None:
                known = ", ".join(self.names())
                raise ConfigError(
                    f"unknown {self._kind} {ref!r}; known: {known}; or give package.module:Class"
                )
            try:
                loaded = ep.load()
            except Exception as exc:  # a plug-in can fail to import in any way
                raise ConfigError(
                    f"{self._kind} plug-in {ref!r} (entry point {ep.value}) cannot be loaded: {exc}"
                ) from exc
            if not isinstance(loaded, type):
                raise ConfigError(f"{self._kind} plug-in {ref!r} ({ep.value}) is not a class")
            cls = loaded
        self._check(cls, ref)
        return cls
