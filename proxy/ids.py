"""Identifiers from per-instance counters (no globals), unique across restarts by a random prefix."""

from __future__ import annotations

import itertools
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


def upstream_id() -> str:
    """A request id for an engine: random (96 bits), so no client can guess another's to
    squat on it or abort it."""
    return "req-" + secrets.token_hex(12)
