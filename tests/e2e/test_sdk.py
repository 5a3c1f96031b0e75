"""The proxy as clients see it: the real OpenAI SDK and LangChain against proxy + simulated engine."""

from __future__ import annotations

import openai
import pytest
from langchain_openai import ChatOpenAI

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
MESSAGES = [{"role": "user", "content": "Say something about schedulers."}]


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_sync_chat_non_streaming(proxy_url: str) -> None:
    out = _client(proxy_url).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12)  # type: ignore[arg-type]
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content
    assert out.usage is not None
    assert out.usage.completion_tokens <= 12
    assert out.usage.completion_tokens == len(out.choices[0].message.content.split())


@pytest.mark.parametrize("include_usage", [True, False])
def test_sync_chat_streaming(proxy_url: str, include_usage: bool) -> None:
    stream = _client(proxy_url).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=9,
        extra_body={"ignore_eos": True},
        stream=True,
        stream_options={"include_usage": True} if include_usage else None,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 9
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1
        assert usage_chunks[0].choices == []
        assert usage_chunks[0].usage is not None
        assert usage_chunks[0].usage.completion_tokens == 9
    else:
        # The proxy asked the engine for usage on its own behalf and hid it from the client.
        assert usage_chunks == []
        assert all(c.choices for c in chunks)
    assert chunks[-1 if not include_usage else -2].choices[0].finish_reason == "length"


def test_sync_completions(proxy_url: str) -> None:
    client = _client(proxy_url)
    out = client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert len(out.choices[0].text.split()) == 5
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    streamed = list(
        client.completions.create(
            model=MODEL, prompt="Once", max_tokens=4, stream=True, extra_body={"ignore_eos": True}
        )
    )
    assert len("".join(c.choices[0].text for c in streamed if c.choices).split()) == 4


async def test_async_chat_streaming_and_not(proxy_url: str) -> None:
    client = openai.AsyncOpenAI(base_url=proxy_url + "/v1", api_key="unused", max_retries=0)
    async with client:
        whole = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=6, extra_body={"ignore_eos": True}
        )  # type: ignore[arg-type]
        assert whole.usage is not None
        assert whole.usage.completion_tokens == 6
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=6, stream=True, extra_body={"ignore_eos": True},  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )  # fmt: skip
        pieces = [c async for c in stream]
        assert pieces[-1].usage is not None
        assert pieces[-1].usage.completion_tokens == 6
        # Same prompt, same simulated model: the streamed answer is the non-streamed one.
        streamed_text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        assert streamed_text == whole.choices[0].message.content


def test_models_listed_through_sdk(proxy_url: str) -> None:
    assert MODEL in [m.id for m in _client(proxy_url).models.list()]


def test_unknown_model_is_sdk_not_found(proxy_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _client(proxy_url).chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert "nope" in str(info.value)


def test_langchain_invoke_and_stream(proxy_url: str) -> None:
    llm = ChatOpenAI(
        base_url=proxy_url + "/v1", api_key="unused", model=MODEL, max_tokens=7, max_retries=0
    )  # type: ignore[arg-type]
    answer = llm.invoke("Hello there")
    assert isinstance(answer.content, str)
    assert answer.content
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["output_tokens"] == len(answer.content.split())
    streamed = "".join(str(chunk.content) for chunk in llm.stream("Hello there"))
    assert streamed == answer.content
