"""Reading usage and the assistant's reply from engine responses, on the side of the relay.

The relay forwards the engine's bytes; this module only watches them. For streams it parses
complete SSE events as they pass, counts generated tokens as they stream (so the process table
sees service grow mid-call), keeps the final usage, and rebuilds the assistant message (content
and tool calls), which program inference needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

_EVENT_END = (b"\n\n", b"\r\n\r\n")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def _usage_of(obj: Any) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


@dataclass(slots=True)
class Reply:
    """What the engine answered so far: text, tool calls, finish reason and usage."""

    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    error: dict[str, Any] | None = None
    id: str | None = None  # of the first chunk: a resumed answer keeps it
    created: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.content)

    def assistant_message(self) -> dict[str, Any]:
        """The reply as the assistant message an agent will send back in its next call."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return message

    def _merge_tool_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", len(self.tool_calls))
        if not isinstance(index, int):
            return
        slot = self.tool_calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if isinstance(delta.get("id"), str):
            slot["id"] = delta["id"]
        if isinstance(delta.get("type"), str):
            slot["type"] = delta["type"]
        fn = delta.get("function")
        if isinstance(fn, dict):
            for key in ("name", "arguments"):
                if isinstance(fn.get(key), str):
                    slot["function"][key] += fn[key]

    def absorb_chunk(self, chunk: dict[str, Any]) -> int:
        """Take one streamed chunk; return how many generated tokens it carried."""
        usage = _usage_of(chunk)
        if usage is not None:
            self.usage = usage
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
            created = chunk.get("created")
            self.created = created if isinstance(created, int) else None
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
        tokens = 0
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(piece, str) and piece:
                self.content.append(piece)
                tokens += 1
            if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
                for tool_delta in delta["tool_calls"]:
                    if isinstance(tool_delta, dict):
                        self._merge_tool_call(tool_delta)
                tokens += 1
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return tokens

    def absorb_body(self, body: bytes) -> None:
        """Take a whole non-streamed response body."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        self.usage = _usage_of(obj)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                self.content.append(message["content"])
            for i, call in enumerate(message.get("tool_calls") or ()):
                if isinstance(call, dict):
                    self.tool_calls[i] = call
        elif isinstance(first.get("text"), str):
            self.content.append(first["text"])
        if isinstance(first.get("finish_reason"), str):
            self.finish_reason = first["finish_reason"]


def _is_usage_only(chunk: Any) -> bool:
    return isinstance(chunk, dict) and chunk.get("choices") == [] and _usage_of(chunk) is not None


Rewrite = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class StreamWatcher:
    """Watches an SSE byte stream. ``feed`` returns the bytes to forward and the tokens seen.

    By default the bytes go on exactly as they came. In *whole-event* mode (the proxy asked for
    usage that the client did not, or it may cut the stream to preempt the call) complete
    events are forwarded as soon as they are complete, never a fragment, and the usage-only
    chunk is held back if ``drop_usage_chunk``. A ``rewrite`` function, set while relaying a
    resumed call's continuation, may change or drop (return None) each JSON chunk; the chunks
    of such a continuation are re-encoded.
    """

    __slots__ = ("_buffer", "_drop_usage", "_whole", "done", "garbled", "reply", "rewrite")

    def __init__(self, *, drop_usage_chunk: bool, whole_events: bool = False) -> None:
        self._drop_usage = drop_usage_chunk
        self._whole = whole_events or drop_usage_chunk
        self._buffer = bytearray()
        self.reply = Reply()
        self.done = False  # saw data: [DONE]
        self.garbled = False  # saw a data payload that is not JSON: the engine is babbling
        self.rewrite: Rewrite | None = None

    def feed(self, data: bytes) -> tuple[bytes, int]:
        self._buffer += data
        forward = bytearray() if self._whole else None
        tokens = 0
        while True:
            cut, sep = self._next_boundary()
            if cut < 0:
                break
            event = bytes(self._buffer[: cut + sep])
            del self._buffer[: cut + sep]
            out, n = self._observe(event)
            tokens += n
            if forward is not None and out:
                forward += out
        return (data if forward is None else bytes(forward)), tokens

    def flush(self) -> bytes:
        """What is left when the stream ends without a final blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        out = self._observe(rest)[0] if rest.strip() else rest
        return out if self._whole else b""

    def discard(self) -> None:
        """Forget a partial event (the stream was cut on purpose)."""
        self._buffer.clear()

    def _next_boundary(self) -> tuple[int, int]:
        best, width = -1, 0
        for sep in _EVENT_END:
            at = self._buffer.find(sep)
            if at >= 0 and (best < 0 or at < best):
                best, width = at, len(sep)
        return best, width

    def _observe(self, event: bytes) -> tuple[bytes, int]:
        """Parse one event; return (the bytes to forward for it, tokens it carried)."""
        payload = b"".join(
            line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        if not payload:
            return event, 0
        if payload.strip() == b"[DONE]":
            self.done = True
            return event, 0
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.garbled = True
            return b"", 0
        if not isinstance(chunk, dict):
            return event, 0
        if self.rewrite is not None:
            changed = self.rewrite(chunk)
            if changed is None:
                return b"", 0
            event = b"data: " + orjson.dumps(changed) + b"\n\n"
            chunk = changed
        tokens = self.reply.absorb_chunk(chunk)
        if self._drop_usage and _is_usage_only(chunk):
            return b"", tokens
        return event, tokens
