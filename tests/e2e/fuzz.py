"""Random requests, mostly almost right, for the fuzz test and benchmarks/bench_fuzz.py.

A case is drawn from a ``random.Random``, so hypothesis (which hands out one) can shrink it
and the benchmark can draw thousands from a seed. Every answer must be below 500 and, when it
is an error, in the OpenAI shape.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

MODEL = "sim-llama-3.1-8b"

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/" + MODEL),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/programs"),
    ("GET", "/v1/programs/run-1"),
    ("DELETE", "/v1/programs/run-1"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("PUT", "/v1/chat/completions"),
    ("GET", "/v1/../sim/state"),
    ("POST", "/v1/%2e%2e/abort_requests"),
    ("GET", "/v1/%252e%252e/sim/state"),
    ("POST", "/v1/load_lora_adapter"),
    ("GET", "/nope"),
]

WEIRD: list[Any] = [
    None,
    True,
    0,
    -1,
    5,
    2**63,
    1.5,
    -1e308,
    "",
    "x",
    "\u0000",
    "\ud7ff\u2028",
    [],
    [5],
    [{}],
    {},
    {"a": 1},
    "sim-llama-3.1-8b",
]

FIELDS = [
    "model",
    "messages",
    "prompt",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "tools",
    "tool_choice",
    "program",
    "priority",
    "vllm_xargs",
    "user",
    "prompt_cache_key",
    "metadata",
    "temperature",
    "logprobs",
]

HEADERS = [
    "X-Program-Id",
    "X-Thread-Id",
    "X-Parent-Call-Ids",
    "X-Program-End",
    "X-Request-Id",
    "traceparent",
    "session-id",
    "Content-Encoding",
    "Authorization",
    "X-Vllm-Priority",
]

HEADER_VALUES = [
    "",
    "run-1",
    "true",
    "maybe",
    "a b",
    "x" * 300,
    "gzip",
    "deflate",
    "br",
    "Bearer ",
    "Bearer sk-1",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "a,b,,c",
    "é",
    "-100",
    "\udcff\udcfe",  # bytes that are not UTF-8, sent as they are
]


@dataclass
class Case:
    method: str
    path: str
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes | None = None


def _message(rng: random.Random) -> Any:
    if rng.random() < 0.7:
        return {"role": "user", "content": rng.choice(["hi", "tell me a story", ""])}
    return rng.choice(
        [
            {"role": "assistant", "tool_calls": [{"function": rng.choice(WEIRD)}]},
            {"role": rng.choice(WEIRD), "content": rng.choice(WEIRD)},
            {"role": "user", "content": [{"type": "text", "text": rng.choice(WEIRD)}]},
            rng.choice(WEIRD),
        ]
    )


def _body(rng: random.Random, path: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": rng.randint(1, 8)}
    if "chat" in path:
        body["messages"] = [_message(rng) for _ in range(rng.randint(1, 3))]
    elif "completions" in path:
        body["prompt"] = rng.choice(["hi", ["a", "b"], [1, 2, 3], [[1], [2]]])
    else:
        body["input"] = "hello"
    for _ in range(rng.randint(0, 4)):
        name = rng.choice(FIELDS)
        value = rng.choice(WEIRD)
        if name in ("max_tokens", "max_completion_tokens") and isinstance(value, int):
            value = min(value, 16)  # the sim engine would honour a huge one, slowly
        body[name] = value
    if rng.random() < 0.1:
        body["program"] = {"id": rng.choice(WEIRD), "end": rng.choice(WEIRD)}
    if rng.random() < 0.1:
        body["stream"] = True
    return body


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def random_case(rng: random.Random) -> Case:
    method, path = rng.choice(ROUTES)
    case = Case(method, path)
    for _ in range(rng.randint(0, 3)):
        value = rng.choice(HEADER_VALUES).encode(errors="surrogateescape")
        case.headers[rng.choice(HEADERS)] = value
    if method in ("POST", "PUT"):
        roll = rng.random()
        if roll < 0.08:
            case.body = rng.choice([b"", b"{", b"null", b"[1]", b"\xff\xfe", b'{"a":1}{'])
        elif roll < 0.14:
            body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
            case.body = body[:-1] + b',"deep":' + _nested(rng.choice([100, 200, 300, 600])) + b"}"
        else:
            case.body = orjson.dumps(_body(rng, path))
        case.headers.setdefault("Content-Type", b"application/json")
    return case


def raw_request(case: Case) -> bytes:
    """The case as bytes on the wire: sent as is, so headers may hold any byte but CR/LF."""
    lines = [f"{case.method} {case.path} HTTP/1.1".encode(), b"Host: fuzz", b"Connection: close"]
    for name, value in case.headers.items():
        lines.append(name.encode() + b": " + value)
    if case.body is not None:
        lines.append(b"Content-Length: " + str(len(case.body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (case.body or b"")


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode(errors="replace")
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return Answer(status, headers.get("content-type", ""), body)
