"""Reading a stream's text deltas without parsing each one.

An engine streams a long answer as events that differ only in their text: the same id, model
and creation time, one choice, no finish reason, no usage, and one ``"content"`` string that
changes. Parsing every such event as JSON, and walking its dict, is most of what the proxy
spends per streamed token. ``DeltaTemplate`` learns the bytes around the text once, from an
event that was parsed, and then reads the text of the next events by comparing their start
and end with those bytes.

It is exact, not a guess: the template is kept only if putting other text between its two
halves parses to the very same event with that text in ``delta.content`` (checked once, on a
probe). Any text without a quote, a backslash or a control character leaves a JSON string
literal a string literal, so an event that starts and ends with the halves and has such text
between them is that event; anything else (escapes, an empty text, other bytes) is parsed as
before. An engine that writes its events in another shape (spaces after colons, escaped
non-ASCII text) gets no template and loses nothing.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_KEY = b'"content":"'
_UNSAFE = re.compile(rb'["\\\x00-\x1f]')  # what a raw JSON string's contents may not hold
_unsafe_in = _UNSAFE.search  # bound once: ``between`` runs for every streamed token
_PROBE = "x"
_TRIES = 4  # events of a stream to learn from before giving up on its shape


class DeltaTemplate:
    """One stream's template (``learn`` from a parsed event; ``text`` of the next ones)."""

    __slots__ = ("_sep", "_tries", "event", "listed", "payload", "tokens")

    def __init__(self) -> None:
        # ``between``'s arguments for an event's data: the halves and their length together
        # (an event must be longer to hold text); None until learnt.
        self.payload: tuple[bytes, bytes, int] | None = None
        # The same for bytes that may be one whole event of one data line ("data:" ...
        # "\n\n"), as ``between``'s arguments; None until learnt. The halves hold no
        # newline and the text no control character, so bytes that match are one event.
        self.event: tuple[bytes, bytes, int] | None = None
        self.listed: tuple[bytes, bytes, int] | None = None  # an event of a read's split
        # What lies between the texts of two learnt events in a row (``texts``).
        self._sep = b""
        self._tries = _TRIES
        self.tokens = 0  # what ``Reply.absorb_chunk`` counted for the learnt event

    @property
    def ready(self) -> bool:
        return self.payload is not None

    def text(self, payload: bytes) -> str | None:
        """The delta text of ``payload`` (an event's data) if it is the learnt event with
        other text; else None (the caller parses it)."""
        return None if self.payload is None else between(payload, *self.payload)

    def learn(self, payload: bytes, chunk: dict[str, Any], tokens: int) -> None:
        """Take ``payload`` (parsed as ``chunk``, which counted ``tokens``) as the template,
        if it is a plain text delta and its text sits where the template says."""
        if self._tries <= 0:
            return
        self._tries -= 1
        text = _plain_text(chunk)
        if text is None or _UNSAFE.search(encoded := text.encode()) is not None:
            return
        needle = _KEY + encoded + b'"'
        at = payload.find(needle)
        if at < 0 or payload.find(needle, at + 1) >= 0:
            return
        head = payload[: at + len(_KEY)]
        tail = payload[at + len(_KEY) + len(encoded) :]
        try:
            probe = orjson.loads(head + _PROBE.encode() + tail)
        except orjson.JSONDecodeError:
            return
        if probe != _with_text(chunk, _PROBE):
            return  # the bytes found were not this event's text (a look-alike elsewhere)
        if b"\n" in head or b"\n" in tail:
            return  # (never from one data line; kept so that ``event_text`` stays exact)
        size = len(head) + len(tail)
        self.payload = (head, tail, size)
        self.event = (b"data:" + head, tail + b"\n\n", size + 7)
        self.listed = (b"data:" + head, tail, size + 5)
        self._sep = tail + b"\n\ndata:" + head
        self.tokens = tokens

    def texts(self, data: bytes) -> list[str] | None:
        """The texts of ``data`` if it is one or more whole learnt events with other text, one
        after the other and nothing else (an engine that outpaces the proxy: several events
        per read); else None. The read must start as an event does and end as one does; in
        between, the bytes that separate two events' texts split it into the texts, which
        must each be non-empty and all safe (one search over them together). Texts cannot
        hold a separator (it has quotes), so the read is exactly those events."""
        if self.event is None:
            return None
        head, tail, _ = self.event
        if not (data.startswith(head) and data.endswith(tail)):
            return None
        found = data[len(head) : len(data) - len(tail)].split(self._sep)
        if not all(found) or _unsafe_in(b"".join(found)) is not None:
            return None
        try:
            return [text.decode() for text in found]
        except UnicodeDecodeError:
            return None


def between(data: bytes, head: bytes, tail: bytes, size: int) -> str | None:
    """The text between ``head`` and ``tail`` (together ``size`` bytes long), if ``data`` is
    them with safe, non-empty text between; else None."""
    if len(data) > size and data.startswith(head) and data.endswith(tail):
        # The text is copied out and searched (a few bytes); a read of many events fails at
        # its first quote. (Faster than a search in place with bounds, and one slice only.)
        text = data[len(head) : len(data) - len(tail)]
        if _unsafe_in(text) is None:
            try:
                return text.decode()
            except UnicodeDecodeError:
                return None
    return None


def _plain_text(chunk: dict[str, Any]) -> str | None:
    """The text of a chunk that carries nothing but text in its one choice: no usage, no
    error, no finish reason, no tool calls."""
    if chunk.get("usage") is not None or chunk.get("error") is not None:
        return None
    choices = chunk.get("choices")
    if type(choices) is not list or len(choices) != 1:
        return None
    choice = choices[0]
    if type(choice) is not dict or choice.get("index", 0) != 0:
        return None
    if choice.get("finish_reason") is not None:
        return None
    delta = choice.get("delta")
    if type(delta) is not dict or delta.get("tool_calls") is not None:
        return None
    text = delta.get("content")
    return text if type(text) is str and text else None


def _with_text(chunk: dict[str, Any], text: str) -> dict[str, Any]:
    choice = chunk["choices"][0]
    return {**chunk, "choices": [{**choice, "delta": {**choice["delta"], "content": text}}]}
