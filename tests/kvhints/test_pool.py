import pytest

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.errors import NotFound, ServiceUnavailable
from proxy.kvhints.pool import EnginePool


def _pool(*engines: EngineConfig) -> EnginePool:
    return EnginePool(make_backend(e) for e in engines)


def test_least_busy_healthy_engine_serving_the_model() -> None:
    pool = _pool(
        EngineConfig(name="a", url="http://a", models=["m"]),
        EngineConfig(name="b", url="http://b", models=["m", "n"]),
        EngineConfig(name="c", url="http://c", models=["n"]),
    )
    pool.engines["a"].inflight = 3
    assert pool.choose("m").name == "b"
    pool.engines["b"].healthy = False
    assert pool.choose("m").name == "a"
    assert pool.models() == {"m": ["a"], "n": ["c"]}


def test_serving_lists_the_candidates_without_choosing() -> None:
    pool = _pool(
        EngineConfig(name="a", url="http://a", models=["m"]),
        EngineConfig(name="b", url="http://b", models=["m", "n"]),
        EngineConfig(name="c", url="http://c", models=["n"]),
    )
    pool.engines["a"].healthy = False
    assert [s.name for s in pool.serving("m")] == ["b"]
    assert [s.name for s in pool.serving(None)] == ["b", "c"]
    with pytest.raises(NotFound):
        pool.serving("x")


def test_unknown_model_is_not_found_when_all_lists_are_known() -> None:
    pool = _pool(EngineConfig(name="a", url="http://a", models=["m"]))
    with pytest.raises(NotFound) as info:
        pool.choose("x")
    assert info.value.param == "model"


def test_unknown_model_is_unavailable_while_an_engine_was_never_asked() -> None:
    pool = _pool(
        EngineConfig(name="a", url="http://a", models=["m"]), EngineConfig(name="b", url="http://b")
    )
    with pytest.raises(ServiceUnavailable, match="b"):
        pool.choose("x")


def test_no_healthy_engine_names_them() -> None:
    pool = _pool(EngineConfig(name="a", url="http://a", models=["m"]))
    pool.mark_failed(pool.engines["a"], "connection refused")
    with pytest.raises(ServiceUnavailable, match="a \\(connection refused\\)"):
        pool.choose("m")
    assert not pool.any_healthy()


def test_no_engines() -> None:
    with pytest.raises(ServiceUnavailable):
        EnginePool().choose("m")
