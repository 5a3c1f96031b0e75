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

from proxy.intercept.deltas import DeltaTemplate, between


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
        # Runs for every streamed event: plain ``get``s and ``type() is`` tests, no helpers.
        if chunk.get("usage") is not None:
            usage = _usage_of(chunk)
            if usage is not None:
                self.usage = usage
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
            created = chunk.get("created")
            self.created = created if isinstance(created, int) else None
        error = chunk.get("error")
        if error is not None and isinstance(error, dict):
            self.error = error
        choices = chunk.get("choices")
        if type(choices) is not list:
            return 0
        tokens = 0
        for choice in choices:
            if type(choice) is not dict or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if type(delta) is dict:
                piece = delta.get("content")
                calls = delta.get("tool_calls")
                if calls is not None and type(calls) is list:
                    for tool_delta in calls:
                        if isinstance(tool_delta, dict):
                            self._merge_tool_call(tool_delta)
                    tokens += 1
            else:
                piece = choice.get("text")
            if piece and type(piece) is str:
                self.content.append(piece)
                tokens += 1
            finish = choice.get("finish_reason")
            if finish is not None and type(finish) is str:
                self.finish_reason = finish
        return tokens

    def absorb_body(self, body: bytes) -> bool:
        """Take a whole non-streamed response body; whether it is a JSON object (parsed once,
        for both questions)."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(obj, dict):
            return False
        self.usage = _usage_of(obj)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return True
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
        return True


def _payload(event: bytes) -> bytes:
    """The data of one SSE event (its ``data:`` lines joined), without the blank line."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:]  # the usual event: one data line (JSON ignores the leading space)
    return b"".join(
        line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
    )


Rewrite = Callable[[dict[str, Any]], "dict[str, Any] | None"]
_SEP = b"\n\n"
_CRLF_SEP = b"\r\n\r\n"


class StreamWatcher:
    """Watches an SSE byte stream. ``feed`` returns the bytes to forward and the tokens seen.

    By default the bytes go on exactly as they came. In *whole-event* mode (the proxy asked for
    usage that the client did not, or it may cut the stream to preempt the call) only complete
    events are forwarded, never a fragment, and the usage-only chunk is held back if
    ``drop_usage_chunk``. A ``rewrite`` function, set while relaying a resumed call's
    continuation, may change or drop (return None) each JSON chunk; the chunks of such a
    continuation are re-encoded.

    Boundaries are searched for in the new bytes only, from the end (one ``rfind`` per read
    finds every complete event at once). Engines end events with ``\n\n``; a stream that
    carries a ``\r`` is switched for good to a slower search that also knows ``\r\n\r\n``.
    When every event of a read is forwarded as it came, the forwarded bytes are the read's own
    (no copy). Events that differ from a parsed one only in their text are read without
    parsing (``proxy.intercept.deltas``).
    """

    __slots__ = (
        "_buffer",
        "_crlf",
        "_drop_usage",
        "_template",
        "_whole",
        "done",
        "garbled",
        "reply",
        "rewrite",
    )

    def __init__(self, *, drop_usage_chunk: bool, whole_events: bool = False) -> None:
        self._drop_usage = drop_usage_chunk
        self._whole = whole_events or drop_usage_chunk
        self._crlf = False
        self._buffer = bytearray()  # the start of an event whose end has not come yet
        self.reply = Reply()
        self.done = False  # saw data: [DONE]
        self.garbled = False  # saw a data payload that is not JSON: the engine is babbling
        self.rewrite: Rewrite | None = None
        self._template = DeltaTemplate()  # text deltas read without parsing (``deltas``)

    def whole_events(self, on: bool) -> None:
        """Forward only complete events from now on (a segment that may be cut), or not."""
        self._whole = on or self._drop_usage

    def feed(self, data: bytes) -> tuple[bytes, int]:
        event = self._template.event
        if event is not None and not self._buffer and self.rewrite is None:
            if len(data) < 2 * event[2]:  # no room for two events
                text = between(data, *event)
                if text is not None:  # one text delta, the usual read: goes on as it came
                    self.reply.content.append(text)
                    return data, self._template.tokens
            else:
                texts = self._template.texts(data)
                if texts is not None:  # text deltas only (several): they go on as they came
                    self.reply.content.extend(texts)
                    return data, self._template.tokens * len(texts)
        if not self._crlf and b"\r" in data:
            self._crlf = True
        buf = self._buffer
        if self._crlf:
            buf += data
            complete = self._cut_crlf()
        elif buf:
            start = len(buf) - 1  # a separator may straddle the old and the new bytes
            buf += data
            end = buf.rfind(_SEP, start)
            if end < 0:
                complete = b""
            else:
                complete = bytes(buf[: end + 2])
                del buf[: end + 2]
        else:
            end = data.rfind(_SEP)
            if end < 0:
                buf += data
                complete = b""
            elif end + 2 == len(data):
                complete = data
            else:
                complete = data[: end + 2]
                buf += data[end + 2 :]
        if not complete:
            return (b"" if self._whole else data), 0
        forward, tokens = self._events(complete)
        return (forward if self._whole else data), tokens

    def _cut_crlf(self) -> bytes:
        buf, last = self._buffer, -1
        for sep in (_SEP, _CRLF_SEP):
            at = buf.rfind(sep)
            if at >= 0:
                last = max(last, at + len(sep))
        if last < 0:
            return b""
        complete = bytes(buf[:last])
        del buf[:last]
        return complete

    def _events(self, complete: bytes) -> tuple[bytes, int]:
        """Observe complete events; return the bytes to forward for them and their tokens."""
        if (
            not self._crlf
            and complete.find(b"\n") == len(complete) - 2
            and complete.startswith(b"data:")
        ):  # one event of one data line per read: the usual case with engines
            out, tokens = self._chunk(complete[5:-2])  # (a bytes slice parses faster than a view)
            return (complete if out is None else out), tokens
        original = complete
        if self._crlf:
            complete = complete.replace(b"\r\n", b"\n")
        events = complete.split(_SEP)  # the last item is the empty tail after the last event
        tokens = 0
        kept: list[bytes] | None = None  # set once an event is dropped or changed
        chunk_of = self._chunk
        listed = self._template.listed if self.rewrite is None else None
        for i in range(len(events) - 1):
            event = events[i]
            if listed is not None and (text := between(event, *listed)) is not None:
                self.reply.content.append(text)  # a text delta (``proxy.intercept.deltas``)
                tokens += self._template.tokens
                if kept is not None:
                    kept.append(event + _SEP)
                continue
            # Many events per read when the engine outpaces the proxy: ``_observe`` inlined.
            if event.startswith(b"data:") and b"\n" not in event:
                payload = event[5:]
            else:
                payload = _payload(event)
            out, n = chunk_of(payload) if payload else (None, 0)
            tokens += n
            if out is not None and kept is None:
                kept = [e + _SEP for e in events[:i] if e]
            if kept is not None and (out or (out is None and event)):
                kept.append(event + _SEP if out is None else out)
        if kept is None:
            return original, tokens
        return b"".join(kept), tokens

    def flush(self) -> bytes:
        """What is left when the stream ends without a final blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not rest.strip():
            return rest if self._whole else b""
        event = rest.replace(b"\r\n", b"\n").strip(b"\n")
        out, _ = self._observe(event)
        if not self._whole:
            return b""
        return rest if out is None else out

    def discard(self) -> None:
        """Forget a partial event (the stream was cut on purpose)."""
        self._buffer.clear()

    def _observe(self, event: bytes) -> tuple[bytes | None, int]:
        """Parse one event (without its blank line): see ``_chunk``."""
        payload = _payload(event)
        return self._chunk(payload) if payload else (None, 0)

    def _chunk(self, payload: bytes) -> tuple[bytes | None, int]:
        """Take one event's data; return (None if the event goes on unchanged, else its
        replacement with the blank line, or b"" to drop it; the tokens it carried)."""
        template = self._template
        if template.payload is not None and self.rewrite is None:
            text = between(payload, *template.payload)
            if text is not None:  # the learnt event with other text: nothing else to read
                self.reply.content.append(text)
                return None, template.tokens
        if payload.strip() == b"[DONE]":  # before parsing: the exception orjson raises
            self.done = True  # for it would cost more than this test does on every event
            return None, 0
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.garbled = True  # not JSON: the engine is babbling; never forwarded whole
            return b"", 0
        if type(chunk) is not dict:
            return None, 0
        if self.rewrite is not None:
            changed = self.rewrite(chunk)
            if changed is None:
                return b"", 0
            tokens = self.reply.absorb_chunk(changed)
            return b"data: " + orjson.dumps(changed) + _SEP, tokens
        tokens = self.reply.absorb_chunk(chunk)
        if not template.ready:
            template.learn(payload, chunk, tokens)
        # The usage-only chunk: no choices (``[]``) and a usage; tested inline, once per event.
        if self._drop_usage and chunk.get("choices") == [] and _usage_of(chunk) is not None:
            return b"", tokens
        return None, tokens
