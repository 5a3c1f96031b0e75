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
