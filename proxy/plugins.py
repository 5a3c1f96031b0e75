"""Loading plug-ins named by a ``package.module:Class`` path (policies, backends, balancers)."""

from __future__ import annotations

import importlib

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
