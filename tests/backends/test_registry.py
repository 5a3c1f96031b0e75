from typing import Any

import pytest

from proxy.backends.openai import OpenAIBackend
from proxy.backends.registry import load_backend_class, make_backend
from proxy.backends.sglang import SGLangBackend
from proxy.backends.vllm import VLLMBackend
from proxy.config import EngineConfig
from proxy.errors import ConfigError


class CustomBackend(OpenAIBackend):
    pass


class NotABackend:
    def __init__(self, config: Any) -> None:
        self.config = config


def test_builtin_kinds() -> None:
    assert type(make_backend(EngineConfig(name="v", url="http://v", kind="vllm"))) is VLLMBackend
    assert (
        type(make_backend(EngineConfig(name="s", url="http://s", kind="sglang"))) is SGLangBackend
    )


def test_custom_backend_by_path() -> None:
    backend = make_backend(EngineConfig(name="c", url="http://c", kind=f"{__name__}:CustomBackend"))
    assert isinstance(backend, CustomBackend)


def test_bad_plugins_are_named() -> None:
    with pytest.raises(ConfigError, match="no_such_module"):
        load_backend_class("no_such_module:X")
    with pytest.raises(ConfigError, match=r"NotABackend.*missing"):
        make_backend(EngineConfig(name="c", url="http://c", kind=f"{__name__}:NotABackend"))


def test_auth_headers_and_body_fields() -> None:
    keyed = make_backend(EngineConfig(name="v", url="http://v", kind="vllm", api_key="k"))  # type: ignore[arg-type]
    assert keyed.auth_headers(None) == {"Authorization": "Bearer k"}
    assert keyed.auth_headers("Bearer client") == {"Authorization": "Bearer client"}
    sglang = make_backend(EngineConfig(name="s", url="http://s", kind="sglang"))
    assert sglang.prepare_body({"model": "m"}, request_id="r1") == {"model": "m", "rid": "r1"}


def test_vllm_hands_back_a_body_it_adds_nothing_to() -> None:
    from proxy.backends.base import CallHints

    hints = CallHints(level=2, program_id="p", call_id="c", thread="", service=0.0)
    body = {"model": "m"}
    plain = make_backend(EngineConfig(name="v", url="http://v", kind="vllm"))
    assert plain.prepare_body(body, request_id="r", hints=hints) is body
    ranked = make_backend(EngineConfig(name="v", url="http://v", kind="vllm", priority=True))
    out = ranked.prepare_body(body, request_id="r", hints=hints)
    assert out == {"model": "m", "priority": out["priority"]}
    assert body == {"model": "m"}
