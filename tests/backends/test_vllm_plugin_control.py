"""The vLLM plug-in's edges, without vLLM: the tags the proxy sends in ``vllm_xargs``, control
messages, settings from the environment, the policy it builds, the event record, and the
control channel.

The control channel's round trip over real ZeroMQ sockets runs only where pyzmq is installed
(it comes with vLLM); the rest runs in the main environment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from proxy.backends.vllm_plugin.control import (
    CallLevel,
    EventRecord,
    PluginSettings,
    ProgramService,
    make_policy,
    parse_message,
    parse_tags,
)
from proxy.backends.vllm_plugin.queue import (
    CallTags,
)
from proxy.core.cost import ServiceCost
from proxy.errors import ConfigError
from proxy.policies.atlas import ATLAS
from proxy.policies.levels import LevelsConfig
from proxy.policies.plas import PLAS

# Level boundaries for the policies the plug-in builds: 1, 2, 4, 8 (levels 0..4).
LEVELS = LevelsConfig(levels=5, first=1.0, growth=2.0, beta=None)


# -- xargs ----------------------------------------------------------------------------------


def test_tags_from_the_proxys_xargs() -> None:
    tags, problems = parse_tags(
        {
            "autellix_program": "t/p1",
            "autellix_thread": "main",
            "autellix_call": "c9",
            "autellix_service": 2.5,
            "autellix_level": 3,
        },
        "req-1",
    )
    assert problems == []
    assert tags == CallTags(program="t/p1", call="c9", thread="main", service=2.5, level=3)


def test_an_empty_thread_is_no_thread() -> None:
    tags, problems = parse_tags({"autellix_program": "p", "autellix_thread": ""}, "req-1")
    assert problems == []
    assert tags.thread == ""


def test_untagged_request_is_a_program_of_its_own() -> None:
    tags, problems = parse_tags(None, "req-1")
    assert problems == []
    assert tags == CallTags(program="request:req-1", call="req-1")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            {"autellix_program": "p", "autellix_service": "lots"},
            "autellix_service must be a number",
        ),
        ({"autellix_program": "p", "autellix_service": -1}, "autellix_service must be finite"),
        (
            {"autellix_program": "p", "autellix_service": math.inf},
            "autellix_service must be finite",
        ),
        ({"autellix_program": "p", "autellix_service": True}, "autellix_service must be a number"),
        ({"autellix_program": "p", "autellix_level": -2}, "autellix_level must be an integer"),
        ({"autellix_program": "p", "autellix_level": 1.5}, "autellix_level must be an integer"),
        ({"autellix_program": ["p"]}, "autellix_program must be a non-empty string"),
        ({"autellix_program": ""}, "autellix_program must be a non-empty string"),
        ("not a mapping", "extra_args is not a mapping"),
    ],
)
def test_bad_xargs_fall_back_to_defaults(extra: object, problem: str) -> None:
    tags, problems = parse_tags(extra, "req-1")
    assert any(p.startswith(problem) for p in problems), problems
    assert tags.service == 0.0
    assert tags.level is None
    assert tags.program in ("p", "request:req-1")


def test_xargs_without_a_program_make_a_program_of_the_request() -> None:
    tags, problems = parse_tags({"autellix_service": 1.0, "autellix_call": "c"}, "req-1")
    assert problems == ["autellix_program is missing"]
    assert tags == CallTags(program="request:req-1", call="c", service=1.0)


def test_numeric_strings_and_int_ids_are_accepted() -> None:
    tags, problems = parse_tags(
        {"autellix_program": 7, "autellix_call": 8, "autellix_service": "1.5"}, "r"
    )
    assert problems == []
    assert (tags.program, tags.call, tags.service) == ("7", "8", 1.5)


# -- control messages, settings, record -----------------------------------------------------


def test_control_messages_parse() -> None:
    assert parse_message(b'{"program": "p", "service": 2}') == ProgramService("p", 2.0)
    assert parse_message(b' {"call": "c", "level": 0}') == CallLevel("c", 0)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"[1, 2]", "undecodable|must be an object|no msgpack decoder"),
        (b'{"program": "p"}', "unknown control message"),
        (b'{"program": "", "service": 1}', "program must be"),
        (b'{"program": "p", "service": -1}', "service must be finite"),
        (b'{"program": "p", "service": "1"}', "service must be a number"),
        (b'{"call": "c", "level": -1}', "level must be"),
        (b'{"call": "c", "level": true}', "level must be"),
        (b"{not json", "undecodable"),
    ],
)
def test_bad_control_messages_are_rejected(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_message(raw)


def test_msgpack_control_messages() -> None:
    msgpack = pytest.importorskip("msgspec.msgpack")
    raw = msgpack.encode({"program": "p", "service": 1.5})
    assert parse_message(raw) == ProgramService("p", 1.5)


def test_settings_defaults() -> None:
    settings = PluginSettings.from_env({})
    assert settings.policy == "plas"
    assert settings.levels == LevelsConfig()
    assert settings.cost == ServiceCost()
    assert settings.preempt
    assert settings.control_addr is None
    assert settings.log_path is None


@pytest.mark.parametrize("prefix", ["AUTELLIX_PLUGIN_", "AUTELLIX_"])  # new, and the old names
def test_settings_from_env(prefix: str) -> None:
    values = {
        "POLICY": "atlas",
        "LEVELS": "4",
        "LEVEL_FIRST": "0.25",
        "LEVEL_GROWTH": "3",
        "BETA": "off",
        "DECODE_TOKEN_S": "0.02",
        "PREFILL_TOKEN_S": "0",
        "MIN_QUANTUM_TOKENS": "0",
        "PREEMPT": "false",
        "CONTROL_ADDR": "tcp://127.0.0.1:5599",
        "SCHED_LOG": "/tmp/x.jsonl",
        "SCHED_LOG_MAX": "5",
    }
    settings = PluginSettings.from_env({prefix + k: v for k, v in values.items()})
    assert settings.policy == "atlas"
    assert settings.levels == LevelsConfig(levels=4, first=0.25, growth=3.0, beta=None)
    assert settings.cost == ServiceCost(decode_token_s=0.02, prefill_token_s=0.0)
    assert settings.min_quantum_tokens == 0
    assert not settings.preempt
    assert settings.control_addr == "tcp://127.0.0.1:5599"
    assert (settings.log_path, settings.log_max) == ("/tmp/x.jsonl", 5)


def test_the_plugin_prefix_wins_over_the_old_name() -> None:
    settings = PluginSettings.from_env(
        {"AUTELLIX_PLUGIN_LEVELS": "3", "AUTELLIX_LEVELS": "9", "AUTELLIX_BETA": "4"}
    )
    assert settings.levels.levels == 3
    assert settings.levels.beta == 4.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTELLIX_PLUGIN_LEVELS", "0"),
        ("AUTELLIX_PLUGIN_LEVELS", "many"),
        ("AUTELLIX_PLUGIN_LEVEL_FIRST", "-1"),
        ("AUTELLIX_PLUGIN_LEVEL_GROWTH", "1"),
        ("AUTELLIX_PLUGIN_DECODE_TOKEN_S", "0"),
        ("AUTELLIX_PLUGIN_DECODE_TOKEN_S", "nan"),
        ("AUTELLIX_PLUGIN_MIN_QUANTUM_TOKENS", "-3"),
        ("AUTELLIX_PLUGIN_PREEMPT", "maybe"),
        ("AUTELLIX_MIN_QUANTUM_TOKENS", "-3"),  # an old name is named as it was given
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="LEVEL" if "LEVEL" in name else name):
        PluginSettings.from_env({name: value})


def test_policies_come_from_the_registry_with_the_level_settings() -> None:
    plas = make_policy("plas", LEVELS)
    assert isinstance(plas, PLAS)
    assert plas.levels.bounds == (1.0, 2.0, 4.0, 8.0)
    atlas = make_policy("atlas", LEVELS)
    assert isinstance(atlas, ATLAS)
    assert atlas.config.levels == 5
    assert make_policy("fcfs", LEVELS).name == "fcfs"  # takes no level settings


@pytest.mark.parametrize(
    ("name", "error"), [("srpt", "oracle|clairvoyant"), ("nope", "unknown policy")]
)
def test_unusable_policies_stop_the_engine(name: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        make_policy(name, LEVELS)


def test_record_is_bounded_in_memory_and_complete_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "sched.jsonl"
    record = EventRecord(str(path), maxlen=2)
    for i in range(3):
        record.add({"event": "scheduled", "i": i})
    assert path.read_text() == ""  # written at the end of the step
    record.flush()
    assert [e["i"] for e in record.events] == [1, 2]
    assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == [0, 1, 2]
    record.close()
    record.close()


def test_record_without_a_file() -> None:
    record = EventRecord(None, maxlen=10)
    record.add({"event": "arrived"})
    record.flush()
    assert len(record.events) == 1


# -- the channel over real sockets ----------------------------------------------------------


async def test_control_channel_round_trip() -> None:
    pytest.importorskip("zmq")
    import asyncio
    import socket

    from proxy.backends.vllm_control import ControlChannel
    from proxy.backends.vllm_plugin.control import ControlReceiver

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    receiver = ControlReceiver(address)
    channel = ControlChannel(address)
    try:
        assert await channel.send_program_service("p", 1.25)
        assert await channel.send_call_level("c", 2)
        got: list[object] = []
        for _ in range(100):
            messages, errors = receiver.poll()
            assert errors == []
            got.extend(messages)
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert got == [ProgramService("p", 1.25), CallLevel("c", 2)]
        assert channel.sent == 2
        with pytest.raises(ValueError, match="level"):
            await channel.send_call_level("c", -1)
        with pytest.raises(ValueError, match="service"):
            await channel.send_program_service("p", math.nan)
    finally:
        channel.close()
        receiver.close()


def test_control_channel_without_pyzmq(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from proxy.backends.vllm_control import ControlChannel

    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.setitem(sys.modules, "zmq.asyncio", None)
    with pytest.raises(ConfigError, match="pyzmq"):
        ControlChannel("tcp://127.0.0.1:1")


def test_the_proxy_skips_exactly_the_plugins_variables() -> None:
    from proxy.backends import plugin_env
    from proxy.backends.vllm_plugin import control

    assert (plugin_env.PREFIX, plugin_env.LEGACY_PREFIX) == (
        control.ENV_PREFIX,
        control.LEGACY_ENV_PREFIX,
    )
    # Every setting the plug-in reads is one the proxy knows to skip.
    for name in plugin_env.SETTINGS:
        assert plugin_env.is_plugin_variable(control.ENV_PREFIX + name)
    read: list[str] = []

    class Env(dict[str, str]):
        def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
            read.append(key)
            return ""

    PluginSettings.from_env(Env())
    assert {
        k.removeprefix(control.ENV_PREFIX) for k in read if k.startswith(control.ENV_PREFIX)
    } == set(plugin_env.SETTINGS)
