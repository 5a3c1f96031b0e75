"""The admission cap inside vLLM: at most k requests run (``CapConfig``), k fixed or moved by
the core's ``CapController`` from the engine's own step timing.

vLLM admits waiting requests while fewer than ``max_num_active_reqs`` run; the scheduler sets
that to the cap before each step, so vLLM's own admission loop enforces it and the plug-in's
priority queue decides who gets the k places. The plug-in's preemption walk (``victims.py``)
counts free slots against the same limit, so a better-ranked waiting call takes the place of a
worse running one under the core's rule even when vLLM itself has sequences to spare.

Step timing: the time between the starts of two ``schedule()`` calls is one engine step (the
model runs in between), over the requests the earlier call scheduled: those that got one
token decoded, and the prompt tokens the rest prefilled. A cap that shrinks below the running
count preempts nobody; the running set drains to it as calls finish.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from proxy.core.concurrency import CapConfig, CapController, CapMode

ENV_CAP = "AUTELLIX_PLUGIN_CAP"
ENV_CAP_K = "AUTELLIX_PLUGIN_CAP_K"
MODES: dict[str, CapMode] = {"auto": "auto", "off": "off", "fixed": "fixed", "adaptive": "adaptive"}


def cap_from_env(env: Mapping[str, str] = os.environ) -> CapConfig:
    """``AUTELLIX_PLUGIN_CAP`` (auto, off, fixed or adaptive; default auto: adaptive for the
    policies it helps, ``proxy.core.concurrency.HELPED``) and
    ``AUTELLIX_PLUGIN_CAP_K`` (the fixed cap, or the adaptive one's start); ``ValueError``
    naming the variable when one is bad, so the engine refuses to start."""
    mode = env.get(ENV_CAP, "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_CAP}={mode!r}: must be auto, off, fixed or adaptive")
    raw = env.get(ENV_CAP_K, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise ValueError(f"{ENV_CAP_K}={raw!r}: must be an integer >= 1")
    k = int(raw) if raw else None
    if mode == "fixed" and k is None:
        raise ValueError(f"{ENV_CAP}=fixed needs {ENV_CAP_K}")
    return CapConfig(mode=MODES[mode], k=k)


class RunningCap:
    """One engine's cap. ``limit`` is vLLM's own (``max_num_active_reqs`` as configured)."""

    __slots__ = ("_last", "_prefill", "_running", "controller", "limit")

    def __init__(self, config: CapConfig, *, limit: int, now: float) -> None:
        self.limit = limit
        self.controller = CapController(config, limit=limit, now=now)
        self._last: float | None = None
        self._running = 0
        self._prefill = 0

    @property
    def k(self) -> int:
        """The most requests that may run now."""
        k = self.controller.k
        return self.limit if k is None else max(1, min(k, self.limit))

    def before_step(self, now: float, *, waiting: int) -> int:
        """A step starts at ``now`` with ``waiting`` requests queued: account the previous
        step and return the limit for this one."""
        controller = self.controller
        if controller.adaptive:
            last = self._last
            if last is not None and now > last:
                controller.observe_waiting(waiting, now - last)
                controller.observe_step(self._running, now - last, now, prefill=self._prefill)
            self._last = now
            controller.update(now)
        return self.k

    def after_step(self, scheduled: Mapping[str, int]) -> None:
        """The step just scheduled ``scheduled`` (request id: tokens): one token is a decode,
        more a prefill chunk."""
        if not self.controller.adaptive:
            return
        decodes = prefill = 0
        for n in scheduled.values():
            if n == 1:
                decodes += 1
            else:
                prefill += n
        self._running, self._prefill = decodes, prefill
