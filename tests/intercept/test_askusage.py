"""Usage asked for by splicing the client's bytes: the same body as encoding the new dict."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.intercept.askusage import ask_usage

MESSAGES = [{"role": "user", "content": 'a "quoted" {brace} \\ text'}]


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"model": "m", "messages": MESSAGES, "stream": True}),
        b' \n\t{ "model" : "m", "stream": true, "messages": '
        + orjson.dumps(MESSAGES)
        + b', "x-vendor": {"k": [1, 2]} }\n',
    ],
)
def test_the_spliced_bytes_decode_to_the_body_with_usage_asked(raw: bytes) -> None:
    body = orjson.loads(raw)
    original = dict(body)
    asked, spliced = ask_usage(body, raw)
    assert asked["stream_options"] == {"include_usage": True}
    assert spliced is not None
    assert orjson.loads(spliced) == asked
    assert body == original  # the client's dict is not changed


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}, {"other": 1}])
def test_stream_options_already_there_are_merged_in_a_new_encoding(options: Any) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": options}
    asked, spliced = ask_usage(body, orjson.dumps(body))
    assert spliced is None  # the caller encodes ``asked``
    assert asked["stream_options"] == {**(options or {}), "include_usage": True}


def test_without_bytes_only_the_dict_is_made() -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    asked, spliced = ask_usage(body, None)
    assert spliced is None
    assert asked == {**body, "stream_options": {"include_usage": True}}
