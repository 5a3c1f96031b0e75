"""What the simulated model reads and says: token counts and deterministic answers.

There is no tokenizer. Prompts are counted by a cheap heuristic (about four characters per
token, the usual figure for English under Llama-3's 128k BPE vocabulary). Answers are made of
pseudo-words, one per token, each a space and three letters (four characters: the heuristic
counts them exactly). Token ``i`` of an answer depends only on the answer's key and ``i``, so
any suffix of an answer can be produced without the prefix; that is what makes an aborted call
resumable exactly (``continue_final_message``).

The second half turns an OpenAI request body into a ``SimCall``: the prompt's token count, the
answer, the limits, and vLLM's validation errors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

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
from proxy.sim.config import SimEngineConfig
from proxy.sim.engine import EngineRequest

CHARS_PER_TOKEN = 4
# Llama-3 chat template: <|begin_of_text|> once; per message <|start_header_id|>, the role,
# <|end_header_id|>, "\n\n" and <|eot_id|>; and the same header again as the generation prompt.
BEGIN_TOKENS = 1
MESSAGE_OVERHEAD_TOKENS = 4
GENERATION_PROMPT_TOKENS = 4

_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
VOCABULARY = tuple(
    f" {a}{v}{b}" for a in _CONSONANTS for v in _VOWELS for b in _CONSONANTS
)  # 1,445 words

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    # splitmix64's finaliser: cheap, and consecutive inputs give unrelated outputs.
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: one per four characters, rounded up; 0 only for empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def count_words(text: str) -> int:
    """Tokens of a text the simulated model wrote itself: one per whitespace-separated word."""
    return len(text.split())


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text of a list of content parts
    (other parts, e.g. images, are counted by their JSON size)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            else:
                pieces.append(canonical_json(part).decode())
        return "".join(pieces)
    return canonical_json(content).decode()


def message_tokens(message: Mapping[str, Any]) -> int:
    """Tokens one chat message adds to the prompt: its text, tool calls, name and framing."""
    tokens = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(content_text(message.get("content")))
    if message.get("tool_calls"):
        tokens += estimate_tokens(canonical_json(message["tool_calls"]).decode())
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            tokens += estimate_tokens(value)
    return tokens


def chat_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Iterable[Any] | None = None,
    add_generation_prompt: bool = True,
) -> int:
    """Prompt tokens of a chat request as the Llama-3 template would lay it out."""
    tokens = BEGIN_TOKENS + sum(message_tokens(m) for m in messages)
    if tools:
        tokens += estimate_tokens(canonical_json(list(tools)).decode())
    if add_generation_prompt:
        tokens += GENERATION_PROMPT_TOKENS
    return tokens


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys: equal values give equal bytes, whatever the client's key order."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer the simulated model gives to one key: a token stream and its natural length
    (the token count after which it stops on its own, unless ``ignore_eos``)."""

    seed: int
    natural_length: int

    def token(self, i: int) -> str:
        """Text of token ``i`` (0-based), independent of every other token."""
        return VOCABULARY[_mix((self.seed + i) & _MASK) % len(VOCABULARY)]

    def text(self, start: int, stop: int) -> str:
        """Tokens ``start`` (inclusive) to ``stop`` (exclusive), joined."""
        return "".join(self.token(i) for i in range(start, stop))


def answer_for(key: bytes, *, seed: int = 0, length_range: tuple[int, int] = (32, 512)) -> Answer:
    """The deterministic answer for ``key`` (canonical JSON of the chat messages, or of the
    completion prompt); its natural length is drawn from ``length_range``, both ends included."""
    low, high = length_range
    if not 1 <= low <= high:
        raise ValueError("length_range must be (low, high) with 1 <= low <= high")
    digest = hashlib.blake2b(key, digest_size=8, salt=seed.to_bytes(16, "little", signed=True))
    answer_seed = int.from_bytes(digest.digest(), "little")
    length = low + _mix(answer_seed ^ 0x5EED) % (high - low + 1)
    return Answer(seed=answer_seed, natural_length=length)


def chat_answer_key(
    messages: Sequence[Mapping[str, Any]], *, continue_final_message: bool
) -> tuple[bytes, int]:
    """The answer key of a chat request and how many of the answer's tokens are already given.

    A request that continues a final assistant message asks for the rest of the answer to the
    messages before it: the key leaves that message out, and its text counts as the first
    ``k`` tokens. A proxy that aborted a call and resumes it with the partial answer therefore
    gets exactly the tokens the uninterrupted call would have produced.
    """
    if continue_final_message and messages and messages[-1].get("role") == "assistant":
        done = count_words(content_text(messages[-1].get("content")))
        return canonical_json(list(messages[:-1])), done
    return canonical_json(list(messages)), 0


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
    tools: list[dict[str, Any]] | None = None


class _CompletionBody(_Generation):
    prompt: StrictStr | list[StrictInt] | list[StrictStr] | list[list[StrictInt]]


@dataclass(frozen=True, slots=True)
class SimCall:
    """One validated generation request: what to generate and how to answer it."""

    chat: bool
    request_id: str
    model: str
    prompt_tokens: int
    answer: Answer
    offset: int
    """Tokens of the answer already given (a continued final assistant message)."""
    max_tokens: int
    ignore_eos: bool
    priority: int
    stream: bool
    include_usage: bool
    continuous_usage: bool

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.request_id

    @property
    def target_tokens(self) -> int | None:
        if self.ignore_eos:
            return None
        # An answer already complete still costs one token: the end-of-sequence.
        return max(1, self.answer.natural_length - self.offset)

    def token_text(self, i: int) -> str:
        """Text of the ``i``-th generated token of this call (EOS is empty text)."""
        position = self.offset + i
        if not self.ignore_eos and position >= self.answer.natural_length:
            return ""
        return self.answer.token(position)

    def answer_text(self, tokens: int) -> str:
        return "".join(self.token_text(i) for i in range(tokens))

    def engine_request(self, *, arrival: float) -> EngineRequest:
        return EngineRequest(
            id=self.request_id,
            prompt_tokens=self.prompt_tokens,
            target_tokens=self.target_tokens,
            max_tokens=self.max_tokens,
            priority=self.priority,
            arrival=arrival,
        )


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


def _call(
    config: SimEngineConfig,
    body: _Generation,
    *,
    chat: bool,
    request_id: str,
    prompt_tokens: int,
    key: bytes,
    offset: int,
    max_tokens: int | None,
) -> SimCall:
    options = body.stream_options
    return SimCall(
        chat=chat,
        request_id=request_id,
        model=body.model,
        prompt_tokens=prompt_tokens,
        answer=answer_for(
            key, seed=config.seed, length_range=(config.output_len_min, config.output_len_max)
        ),
        offset=offset,
        max_tokens=_max_tokens(config, prompt_tokens, max_tokens),
        ignore_eos=bool(body.ignore_eos),
        priority=body.priority or 0,
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        continuous_usage=bool(options and options.continuous_usage_stats),
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
    prompt_tokens = chat_prompt_tokens(
        messages, tools=data.get("tools"), add_generation_prompt=add_generation_prompt
    )
    requested = body.max_completion_tokens or body.max_tokens
    return _call(
        config,
        body,
        chat=True,
        request_id=request_id,
        prompt_tokens=prompt_tokens,
        key=key,
        offset=offset,
        max_tokens=requested,
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
        key=canonical_json(prompt),
        offset=0,
        max_tokens=body.max_tokens,
    )
