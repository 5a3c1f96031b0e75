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
from dataclasses import dataclass
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


@dataclass(slots=True, eq=False)
class Conversation:
    """A call's chat messages as the index saw them, from ``find`` to ``learn``.

    ``known``: how many leading messages are, value for value, those of a conversation the
    index learnt before (they need no second look: no validation, no token count).
    ``known_tokens``, ``tools`` and ``tools_tokens`` are the caller's: what it estimated for
    those messages and the tools of the earlier call; ``tokens`` is where it puts its estimate
    for this call's messages, for the next call to start from."""

    tenant: str
    state: int  # hash of all the messages
    messages: list[Any]
    known: int = 0
    known_tokens: int | None = None
    tokens: int | None = None
    tools: object = None
    tools_tokens: int = 0
    tail: int | None = None  # key of the tail that was continued; replaced on ``learn``
    raw: bytes | None = None  # the body the messages were parsed from, if the caller had it
    raw_single: bool = False  # ``raw`` is known to hold one "messages" key


_MESSAGES_KEY = b'"messages"'


def _raw_prefix(raw: bytes | None, single: bool) -> bytes | None:
    """The body up to its last ``]``: at or after the end of its messages array. A later body
    that starts with these bytes and has more messages has the same messages before them (its
    array cannot close at the same place). Only bodies with one ``"messages"`` key qualify: a
    repeated key would let a later copy of the array win the parse. (``single``: that is known
    already, from the body's own start being checked so.)"""
    if raw is None or (not single and raw.count(_MESSAGES_KEY) != 1):
        return None
    end = raw.rfind(b"]")
    return raw[:end] if end > 0 else None


@dataclass(slots=True)
class _Tail:
    messages: list[Any]
    state: int
    tokens: int | None
    tools: object
    tools_tokens: int
    raw_prefix: bytes | None
    size: int  # estimated bytes held


def _same_start(tail: _Tail, messages: list[Any], raw: bytes | None) -> tuple[bool, bool]:
    """Do ``messages`` begin with the tail's messages, and was that seen in the bytes? By
    bytes when both bodies are at hand (one memcmp, and a search for a second "messages" key
    in the new bytes only), else by value (one list comparison, in C)."""
    prefix = tail.raw_prefix
    if (
        prefix is not None
        and raw is not None
        and raw.startswith(prefix)
        and raw.find(_MESSAGES_KEY, len(prefix) - len(_MESSAGES_KEY) + 1) < 0
    ):
        return True, True
    return bool(tail.messages == messages[: len(tail.messages)]), False


class PrefixIndex:
    """Bounded map from hashes of served conversations (ending in a reply) to program ids.

    ``capacity`` bounds the number of entries; the least recently used one goes first. A
    program holds one entry per reply, so a capacity of N keeps the last N replies served.

    Agents resend their conversation with two or three new messages each time. The last
    ``recent`` conversations learnt are also kept whole (a reference to their message list,
    one per program at most: a continuation replaces the conversation it continued), keyed by
    the reply that ended them. A call whose last assistant message is such a reply, and whose
    messages before it are equal to that conversation's (one comparison, in C), is hashed from
    the known state over its new messages only. ``recent_bytes`` bounds the memory they hold
    (their bodies' size, times 3.5 for the bytes and the parsed messages); the least recently
    continued go first.
    """

    __slots__ = ("_entries", "_held", "_tails", "capacity", "evicted", "recent", "recent_bytes")

    def __init__(
        self, capacity: int = 200_000, recent: int = 1024, recent_bytes: int = 128 << 20
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.recent = recent
        self.recent_bytes = recent_bytes
        self._held = 0  # bytes the kept conversations hold, as estimated in ``learn``
        self._entries: OrderedDict[int, str] = OrderedDict()
        self._tails: OrderedDict[int, _Tail] = OrderedDict()
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
        found, conversation = self.find(tenant, messages)
        return found, conversation.state

    def find(
        self, tenant: str, messages: Sequence[object], raw: bytes | None = None
    ) -> tuple[str | None, Conversation]:
        """``match``, keeping what ``learn`` needs to continue from this call next time.
        ``raw``: the JSON body ``messages`` came from, if the caller has it; the known part of
        the conversation is then recognised by comparing bytes rather than parsed objects."""
        listed = messages if isinstance(messages, list) else list(messages)
        k = len(listed) - 1
        while k >= 0:
            message = listed[k]
            if type(message) is dict and message.get("role") == "assistant":
                break
            k -= 1
        if k >= 0 and self._tails:
            reply = canonical(listed[k])
            key = hash((tenant, k, reply))
            tail = self._tails.get(key)
            same, by_bytes = (
                _same_start(tail, listed, raw)
                if tail is not None and len(tail.messages) == k
                else (False, False)
            )
            if tail is not None and same:
                h = hash((tail.state, reply))
                program_id = self._entries.get(h)
                if program_id is not None:
                    self._entries.move_to_end(h)
                    self._tails.move_to_end(key)
                    state = h
                    for message in listed[k + 1 :]:
                        state = _step(state, message)
                    conversation = Conversation(
                        tenant, state, listed, k, tail.tokens, None, tail.tools,
                        tail.tools_tokens, key, raw, by_bytes,
                    )  # fmt: skip
                    return program_id, conversation
        found, conversation = self._search(tenant, listed)
        conversation.raw = raw
        return found, conversation

    def _search(self, tenant: str, messages: list[Any]) -> tuple[str | None, Conversation]:
        state = self.root(tenant)
        ends: list[tuple[int, int]] = []  # (index, hash) after each assistant message
        for i, message in enumerate(messages):
            state = _step(state, message)
            if isinstance(message, dict) and message.get("role") == "assistant":
                ends.append((i, state))
        conversation = Conversation(tenant, state, messages)
        for _, h in reversed(ends):
            program_id = self._entries.get(h)
            if program_id is not None:
                self._entries.move_to_end(h)
                return program_id, conversation
        return None, conversation

    def learn(self, conversation: Conversation, reply: Mapping[str, Any], program_id: str) -> None:
        """``add`` for a conversation from ``find``; it is also kept whole (see the class)."""
        canon = canonical(dict(reply) if not isinstance(reply, dict) else reply)
        self._put(hash((conversation.state, canon)), program_id)
        if self.recent < 1:
            return
        if conversation.tail is not None and (old := self._tails.pop(conversation.tail, None)):
            self._held -= old.size
        raw = conversation.raw
        # JSON parsed into dicts and strings takes about 2.4 times its bytes; plus the bytes.
        size = len(raw) * 7 // 2 if raw is not None else 0
        key = hash((conversation.tenant, len(conversation.messages), canon))
        if (old := self._tails.pop(key, None)) is not None:
            self._held -= old.size
        self._tails[key] = _Tail(
            conversation.messages,
            conversation.state,
            conversation.tokens,
            conversation.tools,
            conversation.tools_tokens,
            _raw_prefix(raw, conversation.raw_single),
            size,
        )
        self._held += size
        while self._tails and (len(self._tails) > self.recent or self._held > self.recent_bytes):
            self._held -= self._tails.popitem(last=False)[1].size

    def add(self, state: int, reply: Mapping[str, Any], program_id: str) -> None:
        """Remember that the conversation hashed as ``state``, followed by ``reply``, belongs
        to ``program_id``. An identical conversation served later takes the entry over."""
        self._put(_step(state, dict(reply) if not isinstance(reply, dict) else reply), program_id)

    def _put(self, h: int, program_id: str) -> None:
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
