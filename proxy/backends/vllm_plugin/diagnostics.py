"""What the scheduler plug-in tells its operator: warnings logged once, its own failures
contained, and the event record (``AUTELLIX_PLUGIN_LOG``) of each call's arrival, level,
admission, preemption and finish, with the KV blocks it held."""

from __future__ import annotations

import logging
import time
from typing import Any

from proxy.backends.vllm_plugin.control import EventRecord
from proxy.backends.vllm_plugin.queue import CallBook

# Under "vllm." so that vLLM's logging configuration sends these lines to the server log.
logger = logging.getLogger("vllm.autellix.scheduler")


class Diagnostics:
    """A mix-in of ``AutellixScheduler``: the scheduler sets the attributes below; vLLM's
    ``Scheduler`` provides ``current_step`` and ``kv_cache_manager``."""

    book: CallBook
    record: EventRecord
    current_step: int
    kv_cache_manager: Any
    _warned: set[str]

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning("Autellix: " + message + " (logged once)", *args)

    def _guard(self, where: str) -> None:
        """Called in an ``except`` block: the plug-in's own failure must not take the engine
        down with every request in it; vLLM's scheduling goes on, in the last good order."""
        if where not in self._warned:
            self._warned.add(where)
            logger.exception("Autellix: %s failed; continuing (logged once)", where)
        self._event("plugin_error", where=where)

    def _blocks(self, request_id: str) -> int:
        try:
            return sum(len(ids) for ids in self.kv_cache_manager.get_block_ids(request_id))
        except Exception:  # a diagnostic only: never let it break a step
            return -1

    def _event(self, event: str, request: Any = None, **fields: object) -> None:
        entry: dict[str, object] = {"t": time.time(), "step": self.current_step, "event": event}
        if request is not None:
            entry["req"] = request.request_id
            tracked = self.book.get(request.request_id)
            if tracked is not None:
                entry["call"] = tracked.call.id
                entry["program"] = tracked.program.id
                entry["level"] = tracked.rank.level
                entry["key"] = tracked.rank.key
                entry["service"] = round(tracked.call.service, 6)
                entry["tokens"] = tracked.call.completion_tokens
        entry.update(fields)
        self.record.add(entry)
