"""The simulated engine's OpenAI wire format: request bodies in, response bodies out.

A request body becomes a ``SimCall``: the prompt's token count, the answer (text, or a tool
call), the limits, and vLLM's validation errors (``BadRequest`` and ``NotFound``, which the
server's one error edge turns into OpenAI-shaped JSON). Responses are laid out here as vLLM
sends them: SSE chunks for a stream, a whole ``chat.completion`` or ``text_completion`` object
otherwise. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from proxy.errors import BadRequest, NotFound
from proxy.intercept.tokens import canonical_json, chat_prompt_tokens, estimate_tokens
from proxy.sim.engine.call import SimCall
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.text import Answer, answer_for, chat_answer_key
from proxy.sim.engine.tools import ToolCall, called_function, make_tool_call, tool_choice

DONE = b"data: [DONE]\n\n"

# -- requests: what a call asks of the simulated model ------------------------------------


class _Open(BaseModel):
    # Clients send vendor fields (vLLM's, SGLang's, the proxy's own): accept and ignore them.
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class _StreamOptions(_Open):
    include_usage: StrictBool | None = None
    continuous_usage_stats: StrictBool | None = None


class _Message(_Open):
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _Function(_Open):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class _Tool(_Open):
    type: Literal["function"]
    function: _Function


class _Generation(_Open):
    model: StrictStr
    stream: StrictBool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    n: StrictInt | None = None
    priority: StrictInt | None = None
    ignore_eos: StrictBool | None = None
    vllm_xargs: dict[str, Any] | None = None


class _ChatBody(_Generation):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    continue_final_message: StrictBool | None = None
    add_generation_prompt: StrictBool | None = None
    tools: list[_Tool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None


class _CompletionBody(_Generation):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]


M = TypeVar("M", bound=BaseModel)
_TYPE_NAMES = frozenset({"str", "int", "bool", "float", "list", "dict"})


def _parse(model: type[M], raw: bytes) -> tuple[M, dict[str, Any]]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(body), body
    except ValidationError as exc:
        # Union members add their type names ("str", "list[int]") to the location; drop them.
        where = [p for p in exc.errors()[0]["loc"] if isinstance(p, int) or p.isidentifier()]
        where = [p for p in where if p not in _TYPE_NAMES]
        param = ".".join(str(p) for p in where) or None
        message = exc.errors()[0]["msg"]
        raise BadRequest(f"invalid request: {param or 'body'}: {message}", param=param) from exc


def _common(config: SimEngineConfig, body: _Generation) -> None:
    if body.model not in config.served_names():
        raise NotFound(
            f"The model `{body.model}` does not exist.", param="model", code="model_not_found"
        )
    if body.n not in (None, 1):
        raise BadRequest("only n=1 is supported by the simulated engine", param="n")
    if body.priority and config.scheduling_policy != "priority":
        raise BadRequest(
            f"Got priority {body.priority} but Priority scheduling is not enabled.",
            param="priority",
        )
    if body.stream_options is not None and not body.stream:
        raise BadRequest(
            "Stream options can only be defined when `stream=True`.", param="stream_options"
        )


def _max_tokens(config: SimEngineConfig, prompt_tokens: int, requested: int | None) -> int:
    limit = config.max_model_len
    if prompt_tokens >= limit:
        raise BadRequest(
            f"This model's maximum context length is {limit} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input.",
            code="context_length_exceeded",
        )
    if requested is None:
        return limit - prompt_tokens
    if prompt_tokens + requested > limit:
        raise BadRequest(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the input, {requested} in "
            "the completion). Please reduce the length of the input or completion.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return requested


def _tool_call(body: _ChatBody, answer: Answer) -> ToolCall | None:
    functions = [t.function for t in body.tools or ()]
    names = [f.name for f in functions]
    mode, named = tool_choice(body.tool_choice, names)
    name = called_function(
        names,
        mode=mode,
        named=named,
        last_role=body.messages[-1].role,
        continuing=bool(body.continue_final_message),
    )
    if name is None:
        return None
    function = next(f for f in functions if f.name == name)
    return make_tool_call(answer, name, function.parameters)


def _answer(config: SimEngineConfig, key: bytes) -> Answer:
    return answer_for(
        key, seed=config.seed, length_range=(config.output_len_min, config.output_len_max)
    )


def _call(
    config: SimEngineConfig,
    body: _Generation,
    *,
    chat: bool,
    request_id: str,
    prompt_tokens: int,
    answer: Answer,
    offset: int,
    max_tokens: int | None,
    tool_call: ToolCall | None = None,
) -> SimCall:
    options = body.stream_options
    return SimCall(
        chat=chat,
        request_id=request_id,
        model=body.model,
        prompt_tokens=prompt_tokens,
        answer=answer,
        offset=offset,
        max_tokens=_max_tokens(config, prompt_tokens, max_tokens),
        ignore_eos=bool(body.ignore_eos),
        priority=body.priority or 0,
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        continuous_usage=bool(options and options.continuous_usage_stats),
        tool_call=tool_call,
    )


def chat_call(config: SimEngineConfig, raw: bytes, request_id: str) -> SimCall:
    """Validate a ``/v1/chat/completions`` body; raises ``BadRequest`` or ``NotFound``."""
    body, data = _parse(_ChatBody, raw)
    _common(config, body)
    add_generation_prompt = body.add_generation_prompt is not False
    if body.continue_final_message:
        if add_generation_prompt:
            raise BadRequest(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
                param="continue_final_message",
            )
        if body.messages[-1].role != "assistant":
            raise BadRequest(
                "continue_final_message needs an assistant message last",
                param="continue_final_message",
            )
    messages = data["messages"]
    key, offset = chat_answer_key(
        messages, continue_final_message=bool(body.continue_final_message)
    )
    answer = _answer(config, key)
    tool_call = _tool_call(body, answer)
    prompt_tokens = chat_prompt_tokens(
        messages, tools=data.get("tools"), add_generation_prompt=add_generation_prompt
    )
    return _call(
        config,
        body,
        chat=True,
        request_id=request_id,
        prompt_tokens=prompt_tokens,
        answer=answer,
        offset=offset,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        tool_call=tool_call,
    )


def completion_call(config: SimEngineConfig, raw: bytes, request_id: str) -> SimCall:
    """Validate a ``/v1/completions`` body. The prompt is a string or a list of token ids (or
    a list holding one of those); a batch of several prompts is rejected with 400."""
    body, data = _parse(_CompletionBody, raw)
    _common(config, body)
    prompt: Any = data["prompt"]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise BadRequest(
                "batched prompts are not supported by the simulated engine", param="prompt"
            )
        prompt = prompt[0]
    tokens = estimate_tokens(prompt) if isinstance(prompt, str) else len(prompt)
    if tokens == 0:
        raise BadRequest("the prompt cannot be empty", param="prompt")
    return _call(
        config,
        body,
        chat=False,
        request_id=request_id,
        prompt_tokens=tokens,
        answer=_answer(config, canonical_json(prompt)),
        offset=0,
        max_tokens=body.max_tokens,
    )


# -- responses: what the engine sends back ------------------------------------------------


def usage(call: SimCall, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
    }


def chunk(call: SimCall, created: int, choices: list[Any], usage: Any = None) -> bytes:
    """One SSE event of a stream."""
    body: dict[str, Any] = {
        "id": call.response_id,
        "object": "chat.completion.chunk" if call.chat else "text_completion",
        "created": created,
        "model": call.model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _choice(call: SimCall, content: dict[str, Any] | str, reason: str | None) -> dict[str, Any]:
    # ``content`` is a chat delta, or a completion's text.
    choice: dict[str, Any] = {"index": 0, "delta" if call.chat else "text": content}
    choice["logprobs"] = None
    choice["finish_reason"] = reason
    if reason is not None:
        choice["stop_reason"] = None
    return choice


def _tool_chunks(
    call: SimCall, tool: ToolCall, created: int, sent: int, done: int, reason: str | None
) -> bytes:
    # OpenAI's layout: a delta naming the call (id, type, name, empty arguments), then deltas
    # carrying pieces of the arguments, then a finish chunk with an empty delta.
    out = bytearray()
    use = usage(call, done) if call.continuous_usage else None
    if sent == 0 < done:
        function = {"name": tool.name, "arguments": ""}
        opening = {"index": 0, "id": tool.id, "type": "function", "function": function}
        out += chunk(call, created, [_choice(call, {"tool_calls": [opening]}, None)], use)
    piece = "".join(tool.piece(i) for i in range(sent, done))
    if piece:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        out += chunk(call, created, [_choice(call, delta, None)], use)
    if reason is not None:
        out += chunk(call, created, [_choice(call, {}, call.finish_reason(reason))], use)
    return bytes(out)


def stream_event(call: SimCall, created: int, sent: int, tokens: int, reason: str | None) -> bytes:
    """The SSE chunks for one event of the engine: ``tokens`` new tokens after the ``sent``
    ones, and the finish reason if the request has ended (``None`` while it runs)."""
    if not tokens and reason is None:
        return b""
    out = bytearray()
    if call.chat and sent == 0:  # vLLM sends the role first, with the first token
        out += chunk(call, created, [_choice(call, {"role": "assistant", "content": ""}, None)])
    done = sent + tokens
    if call.tool_call is not None:
        return bytes(out) + _tool_chunks(call, call.tool_call, created, sent, done, reason)
    text = "".join(call.token_text(i) for i in range(sent, done))
    use = usage(call, done) if call.continuous_usage else None
    content = {"content": text} if call.chat else text
    out += chunk(call, created, [_choice(call, content, reason)], use)
    return bytes(out)


def stream_end(call: SimCall, created: int, sent: int) -> bytes:
    """What follows the finish: the usage chunk if the client asked for it, then ``[DONE]``."""
    tail = chunk(call, created, [], usage(call, sent)) if call.include_usage else b""
    return tail + DONE


def whole_body(call: SimCall, created: int, sent: int, reason: str) -> dict[str, Any]:
    """The ``chat.completion`` or ``text_completion`` object of a call that generated ``sent``
    tokens and finished for ``reason``."""
    choice: dict[str, Any] = {"index": 0}
    tool = call.tool_call
    if not call.chat:
        choice["text"] = call.answer_text(sent)
    elif tool is not None and sent:
        function = {"name": tool.name, "arguments": tool.arguments_upto(sent)}
        choice["message"] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": tool.id, "type": "function", "function": function}],
        }
    else:
        text = call.answer_text(sent)
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
    choice.update(logprobs=None, finish_reason=call.finish_reason(reason), stop_reason=None)
    return {
        "id": call.response_id,
        "object": "chat.completion" if call.chat else "text_completion",
        "created": created,
        "model": call.model,
        "choices": [choice],
        "usage": usage(call, sent),
    }
