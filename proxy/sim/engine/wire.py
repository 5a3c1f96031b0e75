"""The simulated engine's requests on the wire: a body becomes a ``SimBatch`` of ``SimCall``s.

A call is one choice of one prompt: its prompt's token count, its answer (text, or a tool call),
its limits. A chat request has ``n`` calls; a completions request ``n`` per prompt of its batch.
vLLM's validation errors are raised as ``BadRequest`` and ``ModelNotFound``, which the server's
one error edge turns into OpenAI-shaped JSON. Response shapes live in ``respond``. Nothing here
does I/O.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
)

from proxy.errors import BadRequest, ModelNotFound
from proxy.intercept.tokens import canonical_json, chat_prompt_tokens, content_text, estimate_tokens
from proxy.intercept.wire import WholeInt
from proxy.sim.engine.call import SimBatch, SimCall
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.text import Answer, answer_for, chat_answer_key
from proxy.sim.engine.tools import (
    ToolCall,
    allowed_functions,
    called_function,
    make_tool_call,
    rank_functions,
    tool_choice,
)

# What OpenAI's document says a null prompt means.
DEFAULT_PROMPT = "<|endoftext|>"
MAX_CHOICES = 128  # OpenAI's limit on n

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


class _Function(_Open):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class _Tool(_Open):
    # OpenAI's custom tools (free-form input) are offered to the model but never called by it.
    type: Literal["function", "custom"]
    function: _Function | None = None
    custom: dict[str, Any] | None = None


class _Generation(_Open):
    model: StrictStr
    stream: StrictBool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: WholeInt | None = Field(default=None, ge=1)
    n: WholeInt | None = Field(default=None, ge=1, le=MAX_CHOICES)
    temperature: float | None = None
    seed: WholeInt | None = None
    priority: WholeInt | None = None
    ignore_eos: StrictBool | None = None
    vllm_xargs: dict[str, Any] | None = None


class _ChatBody(_Generation):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: WholeInt | None = Field(default=None, ge=1)
    continue_final_message: StrictBool | None = None
    add_generation_prompt: StrictBool | None = None
    tools: list[_Tool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None


class _CompletionBody(_Generation):
    prompt: StrictStr | list[WholeInt] | list[StrictStr] | list[list[WholeInt]] | None


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
        raise ModelNotFound(f"The model `{body.model}` does not exist.")
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


def _check_tools(tools: list[_Tool]) -> None:
    for i, tool in enumerate(tools):
        if tool.type == "function" and tool.function is None:
            raise BadRequest(
                f"invalid request: tools.{i}.function: a function tool needs a function object",
                param=f"tools.{i}.function",
            )
        if tool.type == "custom" and not isinstance((tool.custom or {}).get("name"), str):
            raise BadRequest(
                f"invalid request: tools.{i}.custom.name: a custom tool needs a name",
                param=f"tools.{i}.custom.name",
            )


def _tool_call(body: _ChatBody, answer: Answer) -> ToolCall | None:
    functions = {t.function.name: t.function for t in body.tools or () if t.function is not None}
    mode, named = tool_choice(body.tool_choice, list(functions))
    offered = allowed_functions(body.tool_choice, list(functions))
    asked = next((m for m in reversed(body.messages) if m.role == "user"), None)
    ranked = rank_functions(
        [(name, functions[name].description or "") for name in offered],
        content_text(asked.content) if asked is not None else "",
        answer,
    )
    name = called_function(
        ranked,
        mode=mode,
        named=named,
        last_role=body.messages[-1].role,
        continuing=bool(body.continue_final_message),
    )
    if name is None:
        return None
    return make_tool_call(answer, name, functions[name].parameters)


def _answer(config: SimEngineConfig, key: bytes) -> Answer:
    return answer_for(
        key, seed=config.seed, length_range=(config.output_len_min, config.output_len_max)
    )


def _sampling(body: _Generation, request_id: str, index: int) -> bytes:
    """What the answer key adds for choice ``index``: nothing when decoding is greedy
    (temperature 0, or none given: every request and choice of a conversation gets the same
    answer), else the request's ``seed`` (or, without one, its id) and the choice's index, so
    requests and choices differ as sampled ones do, and a request repeated with its seed
    does not."""
    if not body.temperature or body.temperature <= 0:
        return b""
    source = f"seed:{body.seed}" if body.seed is not None else f"id:{request_id}"
    return f"\x00{source}:{index}".encode()


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
    index: int,
    solo: bool,
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
        index=index,
        solo=solo,
    )


def _batch(
    body: _Generation, *, chat: bool, request_id: str, calls: list[SimCall], prompt_tokens: int
) -> SimBatch:
    options = body.stream_options
    return SimBatch(
        chat=chat,
        request_id=request_id,
        model=body.model,
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        calls=tuple(calls),
        prompt_tokens=prompt_tokens,
    )


def chat_batch(config: SimEngineConfig, raw: bytes, request_id: str) -> SimBatch:
    """Validate a ``/v1/chat/completions`` body into its ``n`` calls; raises ``BadRequest``
    or ``ModelNotFound``."""
    body, data = _parse(_ChatBody, raw)
    _common(config, body)
    _check_tools(body.tools or [])
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
    prompt_tokens = chat_prompt_tokens(
        messages, tools=data.get("tools"), add_generation_prompt=add_generation_prompt
    )
    n = body.n or 1
    calls = []
    for index in range(n):
        answer = _answer(config, key + _sampling(body, request_id, index))
        calls.append(
            _call(
                config,
                body,
                chat=True,
                request_id=request_id,
                prompt_tokens=prompt_tokens,
                answer=answer,
                offset=offset,
                max_tokens=body.max_completion_tokens or body.max_tokens,
                index=index,
                solo=n == 1,
                tool_call=_tool_call(body, answer),
            )
        )
    return _batch(body, chat=True, request_id=request_id, calls=calls, prompt_tokens=prompt_tokens)


def _prompts(prompt: Any) -> list[str | list[int]]:
    # As vLLM: a string or a list of token ids is one prompt, any other list a batch of them
    # (an empty list an empty batch); null is the document's default prompt.
    if prompt is None:
        return [DEFAULT_PROMPT]
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def completion_batch(config: SimEngineConfig, raw: bytes, request_id: str) -> SimBatch:
    """Validate a ``/v1/completions`` body into ``n`` calls per prompt, in vLLM's choice
    order (prompt by prompt); raises ``BadRequest`` or ``ModelNotFound``."""
    body, _ = _parse(_CompletionBody, raw)
    _common(config, body)
    prompts = _prompts(body.prompt)
    n = body.n or 1
    solo = n * len(prompts) == 1
    calls, total = [], 0
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, list) and not prompt:
            raise BadRequest("a prompt of token ids cannot be empty", param=f"prompt.{i}")
        # Text is at least the begin-of-text token the tokenizer adds, even when empty.
        tokens = max(1, estimate_tokens(prompt)) if isinstance(prompt, str) else len(prompt)
        total += tokens
        for j in range(n):
            key = canonical_json(prompt) + _sampling(body, request_id, j)
            calls.append(
                _call(
                    config,
                    body,
                    chat=False,
                    request_id=request_id,
                    prompt_tokens=tokens,
                    answer=_answer(config, key),
                    offset=0,
                    max_tokens=body.max_tokens,
                    index=i * n + j,
                    solo=solo,
                )
            )
    return _batch(body, chat=False, request_id=request_id, calls=calls, prompt_tokens=total)
