"""The environment variables of the engine-side scheduler plug-in, named in one place for both
sides: the plug-in reads them, and the proxy's own ``AUTELLIX_*`` configuration skips them, so
a shell or a compose file that sets both never stops the proxy.

The plug-in's prefix is ``AUTELLIX_PLUGIN_``. Its settings were first read as ``AUTELLIX_<NAME>``;
the engine still accepts those (the new name wins when both are set)."""

from __future__ import annotations

PREFIX = "AUTELLIX_PLUGIN_"
LEGACY_PREFIX = "AUTELLIX_"
SETTINGS = (
    "POLICY",
    "LEVELS",
    "LEVEL_FIRST",
    "LEVEL_GROWTH",
    "BETA",
    "DECODE_TOKEN_S",
    "PREFILL_TOKEN_S",
    "MIN_QUANTUM_TOKENS",
    "PREEMPT",
    "CONTROL_ADDR",
    "SCHED_LOG",
    "SCHED_LOG_MAX",
)
# Old names that are not also proxy settings (AUTELLIX_POLICY is one: the proxy's policy).
_LEGACY_ONLY = frozenset(LEGACY_PREFIX + name for name in SETTINGS if name != "POLICY")


def is_plugin_variable(key: str) -> bool:
    """True for a variable meant for the engine-side plug-in, under either prefix."""
    return key.startswith(PREFIX) or key in _LEGACY_ONLY
