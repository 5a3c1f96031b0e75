"""Conversation-prefix index: which program a chat call continues, with no help from the client.

Agents resend their whole conversation on every call. When the proxy serves a chat call it
remembers a hash of the call's messages followed by the assistant reply it produced; a later
call whose messages begin with exactly that sequence continues the same program.

Hashes are chained message by message (``h_i = hash(h_{i-1}, canonical(message_i))``), so
hashing a call costs time proportional to its conversation's length, whatever the number of
programs, and every prefix's hash comes out of the one pass. The chain starts from the
tenant, so one tenant's conversation never matches another's.

The hash is Python's built-in (SipHash-keyed per process for strings, 64 bits): the index is
in-memory and per process, so neither stability across restarts nor a cryptographic hash is
needed, and a chance collision among a million entries is about 1 in 10^13 per lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

_Text = str | None
_ToolCall = tuple[_Text, _Text, str]
# A canonical message: role, name, tool_call_id, content, ((id, name, arguments), ...).
_Canon = tuple[_Text, _Text, _Text, str, tuple[_ToolCall, ...]]


class Unhashable(Exception):
    """A message the index cannot put in canonical form (not an object, not JSON)."""


def _json(value: object) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:  # orjson.JSONEncodeError: an int too large, a non-str key, ...
        raise Unhashable(str(exc)) from exc


def _text(value: object) -> _Text:
    # Only str and None go into the hashed tuple: they hash by value, and nothing a client
    # sends can make the hash raise or two different values collide by type.
    if value is None or isinstance(value, str):
        return value
    return _json(value)


def _content(content: object) -> str:
    # Clients send back a reply as a string or as a list of text parts, with or without the
    # surrounding whitespace the engine produced; all of those are the same message.
    if content is None:
        return ""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                return _json(content)
            text = part.get("text")
            if not isinstance(text, str):
                return _json(content)
            texts.append(text)
        return "".join(texts).strip()
    return _json(content)


def _arguments(arguments: object) -> str:
    # Frameworks parse the arguments the engine produced and serialise them again, changing
    # the spacing; parse and dump both sides the same way.
    if not isinstance(arguments, str):
        return _json(arguments)
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    return _json(parsed)


def _tool_calls(calls: object) -> tuple[_ToolCall, ...]:
    if calls is None:
        return ()
    if not isinstance(calls, list):
        raise Unhashable("tool_calls is not a list")
    out = []
    for call in calls:
        if not isinstance(call, dict):
            raise Unhashable("a tool call is not an object")
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = {}
        out.append((_text(call.get("id")), _text(fn.get("name")), _arguments(fn.get("arguments"))))
    return tuple(out)


def canonical(message: object) -> _Canon:
    """The parts of a message that identify it; everything else (reasoning text, refusal,
    vendor fields) is ignored because clients drop or rewrite it between calls."""
    if not isinstance(message, dict):
        raise Unhashable("a message is not an object")
    calls = message.get("tool_calls")
    if calls is None and isinstance(message.get("function_call"), dict):
        calls = [{"id": None, "function": message["function_call"]}]
    return (
        _text(message.get("role")),
        _text(message.get("name") or None),
        _text(message.get("tool_call_id") or None),
        _content(message.get("content")),
        _tool_calls(calls),
    )


def _step(state: int, message: object) -> int:
    return hash((state, canonical(message)))


class PrefixIndex:
    """Bounded map from hashes of served conversations (ending in a reply) to program ids.

    ``capacity`` bounds the number of entries; the least recently used one goes first. A
    program holds one entry per reply, so a capacity of N keeps the last N replies served.
    """

    __slots__ = ("_entries", "capacity", "evicted")

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[int, str] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def root(tenant: str) -> int:
        return hash(("autellix-conversation", tenant))

    def match(self, tenant: str, messages: Sequence[object]) -> tuple[str | None, int]:
        """The program whose served reply ends the longest prefix of ``messages``, if any,
        and the hash of all of ``messages`` (to pass to ``add`` with this call's reply).

        Raises ``Unhashable`` if a message cannot be put in canonical form."""
        state = self.root(tenant)
        ends: list[tuple[int, int]] = []  # (index, hash) after each assistant message
        for i, message in enumerate(messages):
            state = _step(state, message)
            if isinstance(message, dict) and message.get("role") == "assistant":
                ends.append((i, state))
        for _, h in reversed(ends):
            program_id = self._entries.get(h)
            if program_id is not None:
                self._entries.move_to_end(h)
                return program_id, state
        return None, state

    def add(self, state: int, reply: Mapping[str, Any], program_id: str) -> None:
        """Remember that the conversation hashed as ``state``, followed by ``reply``, belongs
        to ``program_id``. An identical conversation served later takes the entry over."""
        h = _step(state, dict(reply) if not isinstance(reply, dict) else reply)
        self._entries[h] = program_id
        self._entries.move_to_end(h)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1

    def add_conversation(
        self,
        tenant: str,
        messages: Sequence[object],
        reply: Mapping[str, Any],
        program_id: str,
    ) -> None:
        """``add`` for a caller that did not keep the hash from ``match``."""
        state = self.root(tenant)
        for message in messages:
            state = _step(state, message)
        self.add(state, reply, program_id)
