from pathlib import Path

import pytest

from proxy.configfile import from_env, load_config, merge, parse_engine_flag
from proxy.errors import ConfigError


def test_defaults_have_no_engines_and_listen_locally() -> None:
    config = load_config(environ={})
    assert config.engines == []
    assert (config.host, config.port) == ("127.0.0.1", 8000)


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 9000\nhost: 0.0.0.0\nengines:\n  - {name: a, url: 'http://e:1/v1/'}\n")
    config = load_config(path, environ={"AUTELLIX_PORT": "9100"}, overrides={"host": "::1"})
    assert config.port == 9100  # env beats file
    assert config.host == "::1"  # flag beats file
    assert config.engines[0].url == "http://e:1"  # trailing /v1 and slash dropped


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('port = 8100\n[[engines]]\nname = "v"\nurl = "http://v:8000"\nkind = "vllm"\n')
    assert load_config(toml, environ={}).engines[0].kind == "vllm"
    js = tmp_path / "c.json"
    js.write_text('{"port": 8200}')
    assert load_config(js, environ={}).port == 8200


def test_env_nesting_and_json_values() -> None:
    env = {
        "AUTELLIX_SIM__TIME_SCALE": "0.5",
        "AUTELLIX_ENGINES": '[{"name":"x","url":"http://x"}]',
        "OTHER": "1",
    }
    assert from_env(env) == {
        "sim": {"time_scale": 0.5},
        "engines": [{"name": "x", "url": "http://x"}],
    }


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 9300\n")
    assert load_config(environ={"AUTELLIX_CONFIG": str(path)}).port == 9300


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"port": "eighty"}, "port"),
        ({"engines": [{"name": "a", "url": "ftp://x"}]}, "engines.0.url"),
        ({"engines": [{"name": "a", "url": "http://x", "kind": "tgi"}]}, "engines.0.kind"),
        (
            {"engines": [{"name": "a", "url": "http://x", "max_inflight": 0}]},
            "engines.0.max_inflight",
        ),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"\b{field}\b"):
        load_config(environ={}, overrides=data)


def test_duplicate_engine_names_rejected() -> None:
    engines = [{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(environ={}, overrides={"engines": engines})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_config(bad, environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy, environ={})


def test_engine_flag_forms() -> None:
    assert parse_engine_flag("a=http://h:1,kind=vllm,models=m1|m2") == {
        "name": "a", "url": "http://h:1", "kind": "vllm", "models": ["m1", "m2"],
    }  # fmt: skip
    assert parse_engine_flag('{"name": "b", "url": "http://h"}') == {"name": "b", "url": "http://h"}
    for bad in ("nourl", "a=http://h,kind", "{not json"):
        with pytest.raises(ConfigError, match="--engine"):
            parse_engine_flag(bad)


def test_merge_is_deep_and_replaces_lists() -> None:
    assert merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def test_identification_lists_default_or_turn_off() -> None:
    from proxy.app import identify_config
    from proxy.config import ProgramsConfig
    from proxy.intercept.identify import IdentifyConfig

    assert identify_config(ProgramsConfig()).session_headers == IdentifyConfig().session_headers
    off = identify_config(ProgramsConfig(session_headers=[], body_fields=[]))
    assert (off.session_headers, off.body_fields) == ((), ())
    custom = identify_config(ProgramsConfig(body_fields=["metadata.run"]))
    assert custom.body_fields == ("metadata.run",)


def test_engine_side_plugin_variables_are_not_the_proxys() -> None:
    config = load_config(
        environ={
            "AUTELLIX_PLUGIN_LEVELS": "4",
            "AUTELLIX_CONTROL_ADDR": "tcp://127.0.0.1:5599",
            "AUTELLIX_MIN_QUANTUM_TOKENS": "8",
            "AUTELLIX_POLICY": "atlas",  # a name both sides read: the proxy's policy too
        }
    )
    assert config.policy == "atlas"


def test_errors_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={}, overrides={"port": -1, "bogus": 1})
    assert "\n" not in str(info.value)
    assert "port:" in str(info.value)
    assert "bogus:" in str(info.value)
