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
_PROBE = "x"
_TRIES = 4  # events of a stream to learn from before giving up on its shape


class DeltaTemplate:
    """One stream's template (``learn`` from a parsed event; ``text`` of the next ones)."""

    __slots__ = ("_head", "_size", "_tail", "_tries", "tokens")

    def __init__(self) -> None:
        self._head = b""
        self._tail = b""
        self._size = 0  # len(head) + len(tail): an event must be longer to hold text
        self._tries = _TRIES
        self.tokens = 0  # what ``Reply.absorb_chunk`` counted for the learnt event

    @property
    def ready(self) -> bool:
        return self._size > 0

    def text(self, payload: bytes) -> str | None:
        """The delta text of ``payload`` if it is the learnt event with other text; else
        None (the caller parses it)."""
        if (
            len(payload) > self._size
            and payload.startswith(self._head)
            and payload.endswith(self._tail)
        ):
            middle = payload[len(self._head) : len(payload) - len(self._tail)]
            if _UNSAFE.search(middle) is None:
                try:
                    return middle.decode()
                except UnicodeDecodeError:
                    return None
        return None

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
        self._head, self._tail, self._size = head, tail, len(head) + len(tail)
        self.tokens = tokens


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
