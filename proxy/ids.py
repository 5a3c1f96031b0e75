"""Identifiers from per-instance counters (no globals), unique across restarts by a random prefix."""

from __future__ import annotations

import itertools
import os
import re
import secrets

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


class IdGen:
    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix if prefix is not None else secrets.token_hex(3)
        self._counter = itertools.count(1)

    def next(self, kind: str) -> str:
        return f"{kind}-{self.prefix}{next(self._counter):x}"


def valid_request_id(value: str) -> bool:
    """Visible ASCII, no spaces, at most 128 characters: safe in headers, logs and engine ids."""
    return _REQUEST_ID.match(value) is not None


class UpstreamIds:
    """Request ids for engines: random (96 bits of the OS's random bytes), so no client can
    guess another's to squat on it or abort it. The bytes are read a batch at a time: one
    system call per ``batch`` ids rather than one per id."""

    __slots__ = ("_at", "_batch", "_buf")

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._buf = ""
        self._at = 0

    def next(self) -> str:
        # The batch is kept as hex digits, made once per batch: each id is then one slice.
        at = self._at
        if at >= len(self._buf):
            self._buf = os.urandom(12 * self._batch).hex()
            at = 0
        self._at = at + 24
        return "req-" + self._buf[at : at + 24]
