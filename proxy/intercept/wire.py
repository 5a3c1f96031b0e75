"""OpenAI request bodies at the wire: validated by pydantic, forwarded as the client sent them.

The models check only what the proxy relies on (types of the fields it reads); every other
field, including vendor extensions, is allowed and forwarded untouched, because the body that
reaches the engine is the client's own dict, not a re-serialisation of these models.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from proxy.errors import BadRequest


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: StrictBool | None = None


def _null_is_false(value: object) -> object:
    # OpenAI's document declares ``stream`` a nullable boolean defaulting to false.
    return False if value is None else value


def _whole_number(value: object) -> object:
    # JSON Schema's integers include 1.0, and so do OpenAI's and vLLM's servers.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeInt = Annotated[StrictInt, BeforeValidator(_whole_number)]
"""An integer, written with or without a zero fraction (``3`` or ``3.0``); not a string."""


def _bad_message(i: int, field: str, expected: str) -> BadRequest:
    param = f"messages.{i}.{field}" if field else f"messages.{i}"
    return BadRequest(f"invalid request: {param}: {expected}", param=param)


def check_messages(messages: list[Any], start: int = 0) -> None:
    """Check the chat message fields the proxy reads (role, content, tool_calls) from message
    ``start`` on: the ones before it were checked in an earlier call of the same conversation.
    A plain loop, not a pydantic model: it runs for every new message of every call."""
    for i in range(start, len(messages)):
        message = messages[i]
        if type(message) is not dict:
            raise _bad_message(i, "", "must be an object")
        role = message.get("role")
        if type(role) is not str or not role:
            raise _bad_message(i, "role", "must be a non-empty string")
        content = message.get("content")
        if not (
            content is None
            or type(content) is str
            or (type(content) is list and all(type(p) is dict for p in content))
        ):
            raise _bad_message(i, "content", "must be a string, a list of parts or null")
        calls = message.get("tool_calls")
        if calls is not None and not (type(calls) is list and all(type(c) is dict for c in calls)):
            raise _bad_message(i, "tool_calls", "must be a list of objects")


class _Generation(_Open):
    # Only the fields the proxy itself reads, each as OpenAI's document types it (nullable
    # where it says so); the engine checks the rest (``max_tokens``, ``n``, ...).
    model: StrictStr
    stream: Annotated[StrictBool, BeforeValidator(_null_is_false)] = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(_Generation):
    # Any: pydantic would walk the whole list; the check below walks only the new messages.
    messages: Any
    # The proxy estimates the prompt from them: a list of objects, or nothing.
    tools: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _check_messages(self, info: ValidationInfo) -> ChatCompletionRequest:
        if type(self.messages) is not list or not self.messages:
            raise BadRequest(
                "invalid request: messages: must be a list of at least one message",
                param="messages",
            )
        context = info.context
        check_messages(self.messages, context.get("known_messages", 0) if context else 0)
        return self


class CompletionRequest(_Generation):
    # Required, but nullable: the document's default for null is "<|endoftext|>".
    prompt: str | list[str] | list[WholeInt] | list[list[WholeInt]] | None


# orjson reads deeper JSON than it writes (254 levels); the proxy re-encodes bodies for
# engines, so a body it could not re-encode is refused as it arrives. No OpenAI body comes close.
MAX_DEPTH = 128


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    if not raw or raw.isspace():  # (not ``strip``: that copies the whole body)
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(body).__name__}")
    # Counting brackets (in C) is an upper bound of the depth: walk only when it could matter.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise BadRequest(f"request body is nested more than {MAX_DEPTH} levels deep")
    return body


def _depth(value: object) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], body: dict[str, Any], *, known_messages: int = 0) -> M:
    """Validate ``body`` against ``model``; a failure names the first bad field.
    ``known_messages``: leading chat messages already checked (see ``check_messages``)."""
    try:
        if known_messages:
            return model.model_validate(body, context={"known_messages": known_messages})
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequest(f"invalid request: {detail}", param=param) from exc
