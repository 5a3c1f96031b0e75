import pytest

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.errors import NotFound, ServiceUnavailable
from proxy.kvhints.pool import EnginePool


def _pool(*engines: EngineConfig) -> EnginePool:
    return EnginePool(make_backend(e) for e in engines)


def test_models_lists_the_healthy_engines_serving_each() -> None:
    pool = _pool(
        EngineConfig(name="a", url="http://a", models=["m"]),
        EngineConfig(name="b", url="http://b", models=["m", "n"]),
        EngineConfig(name="c", url="http://c", models=["n"]),
    )
    pool.engines["b"].healthy = False
    assert pool.models() == {"m": ["a"], "n": ["c"]}
    pool.check("m")  # a healthy engine serves it: nothing raised


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
        pool.check("x")
    assert info.value.param == "model"


def test_unknown_model_is_unavailable_while_an_engine_was_never_asked() -> None:
    pool = _pool(
        EngineConfig(name="a", url="http://a", models=["m"]), EngineConfig(name="b", url="http://b")
    )
    with pytest.raises(ServiceUnavailable, match="b"):
        pool.check("x")


def test_no_healthy_engine_names_them() -> None:
    pool = _pool(EngineConfig(name="a", url="http://a", models=["m"]))
    pool.mark_failed(pool.engines["a"], "connection refused")
    with pytest.raises(ServiceUnavailable, match="a \\(connection refused\\)"):
        pool.check("m")
    assert not pool.any_healthy()


def test_no_engines() -> None:
    with pytest.raises(ServiceUnavailable):
        EnginePool().check("m")
