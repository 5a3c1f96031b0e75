import pytest

from proxy.errors import BadRequest
from proxy.intercept.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_json_object,
    validate,
)


@pytest.mark.parametrize("raw", [b"", b"   ", b"{not json", b"[1, 2]", b'"text"'])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_json_object(raw)


@pytest.mark.parametrize("raw", [b"", b" ", b"\r\n\t "])
def test_a_body_of_nothing_or_whitespace_is_called_empty(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="empty"):
        parse_json_object(raw)


def test_valid_chat_keeps_vendor_fields() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 3}
    req = validate(ChatCompletionRequest, body)
    assert req.model == "m"
    assert req.model_extra == {"top_k": 3}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        (
            {"model": "m", "messages": [{"role": "user"}], "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
    ],
)
def test_bad_chat_fields_are_named(body: dict[str, object], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate(ChatCompletionRequest, body)
    assert info.value.param == param
    assert param in info.value.message


def test_completion_prompt_forms() -> None:
    for prompt in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        assert validate(CompletionRequest, {"model": "m", "prompt": prompt}).prompt == prompt
    with pytest.raises(BadRequest) as info:
        validate(CompletionRequest, {"model": "m", "prompt": {"x": 1}})
    assert info.value.param is not None
    assert info.value.param.startswith("prompt")


def test_nullable_fields_take_their_documented_defaults() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": None}
    assert validate(ChatCompletionRequest, chat).stream is False
    assert validate(ChatCompletionRequest, {**chat, "stream_options": None}).stream_options is None
    completion = validate(CompletionRequest, {"model": "m", "prompt": None, "stream": None})
    assert completion.prompt is None
    assert completion.stream is False


def test_fields_the_proxy_does_not_read_are_left_to_the_engine() -> None:
    # The engine checks these; the proxy forwards them as sent, even when they are odd.
    body = {"model": "", "messages": [{"role": "user"}], "max_tokens": -1, "n": "2"}
    req = validate(ChatCompletionRequest, body)
    assert req.model_extra == {"max_tokens": -1, "n": "2"}
    with pytest.raises(BadRequest) as info:
        validate(CompletionRequest, {"model": "m"})
    assert info.value.param == "prompt"


def test_messages_already_checked_are_not_checked_again() -> None:
    body = {"model": "m", "messages": [{"content": "x"}, {"role": "user", "content": "y"}]}
    validate(ChatCompletionRequest, body, known_messages=1)
    body["messages"].append({"role": "tool", "content": 3})
    with pytest.raises(BadRequest) as info:
        validate(ChatCompletionRequest, body, known_messages=1)
    assert info.value.param == "messages.2.content"
