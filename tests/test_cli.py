from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from proxy.cli import _overrides, build_parser, main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_flags_become_overrides() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "9",
            "--engine",
            "a=http://x:1,kind=vllm",
            "--forward-client-auth",
            "--log-level",
            "debug",
        ]
    )
    assert _overrides(args) == {
        "port": 9,
        "log_level": "debug",
        "engines": [{"name": "a", "url": "http://x:1", "kind": "vllm"}],
        "forward_client_auth": True,
    }
    sim = build_parser().parse_args(["sim-engine", "--time-scale", "0.5", "--model", "m"])
    assert _overrides(sim) == {"sim": {"time_scale": 0.5, "model": "m"}}


def test_bad_config_exits_2_with_the_field_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--engine", "a=ftp://nope"]) == 2
    assert "engines.0.url" in capsys.readouterr().err


@pytest.mark.e2e
def test_serve_with_no_engine_starts_the_embedded_one() -> None:
    """The README's first quickstart command, as a real process, answered by a plain HTTP client."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "no engine configured" in first
        assert "embedded simulated engine" in first
        body = json.dumps(
            {
                "model": "sim-llama-3.1-8b",
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 5,
            }
        ).encode()
        deadline = time.monotonic() + 20
        while True:
            try:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(req, timeout=10) as resp:
                    answer = json.load(resp)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the proxy did not come up"
                time.sleep(0.1)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"]
        assert 1 <= answer["usage"]["completion_tokens"] <= 5
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0


def test_bench_is_dispatched_with_its_own_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """`autellix bench ...` hands its arguments to the simulator's own parser."""
    import proxy.sim.simulator.bench as bench

    seen: list[object] = []
    monkeypatch.setattr(bench, "run_bench", lambda args: seen.append(args) or 7)
    assert main(["bench", "--quick", "--out", "somewhere"]) == 7
    assert len(seen) == 1
    assert seen[0].quick is True  # type: ignore[attr-defined]
    assert seen[0].out == "somewhere"  # type: ignore[attr-defined]


def _autellix(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTELLIX_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", *argv],
        capture_output=True, text=True, timeout=60, check=False, env={**clean, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "env", "field"),
    [
        (["--policy", "nope"], {}, "policy"),
        (["--policy", "srpt"], {}, "policy"),
        ([], {"AUTELLIX_POLICY_CONFIG": '{"betta": 3}'}, "policy_config"),
    ],
)
def test_bad_policy_is_one_line_before_anything_starts(
    argv: list[str], env: dict[str, str], field: str
) -> None:
    out = _autellix("serve", "--port", "0", *argv, env=env)
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr  # no traceback, and no engine was started (it logs)
    assert lines[0].startswith(f"autellix: invalid configuration: {field}: ")


def test_engine_side_plugin_variables_do_not_stop_the_proxy() -> None:
    # The plug-in's variables, new and old names, set where the proxy also runs.
    env = {
        "AUTELLIX_PLUGIN_CONTROL_ADDR": "tcp://127.0.0.1:5599",
        "AUTELLIX_CONTROL_ADDR": "tcp://127.0.0.1:5599",
        "AUTELLIX_BETA": "8",
        "AUTELLIX_SCHED_LOG": "/tmp/x.jsonl",
        "AUTELLIX_PORT": "not-a-port",  # the proxy's own variables are still checked
    }
    out = _autellix("serve", env=env)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "port:" in out.stderr
    assert "control_addr" not in out.stderr
    assert "beta" not in out.stderr


def test_a_taken_port_is_named_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _autellix("serve", "--port", str(port))
    assert out.returncode == 1
    # One line: the embedded engine did not start either (it logs when it does).
    assert (
        out.stderr
        == f"autellix: cannot start: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )
    assert "Traceback" not in out.stderr
    assert "athrow" not in out.stderr


def test_sim_engine_defaults_to_a_port_of_its_own() -> None:
    from proxy.cli import SIM_ENGINE_PORT, effective_config

    sim = effective_config(build_parser().parse_args(["sim-engine"]))
    serve = effective_config(build_parser().parse_args(["serve"]))
    assert sim.port == SIM_ENGINE_PORT != serve.port == 8000
    given = effective_config(build_parser().parse_args(["sim-engine", "--port", "8000"]))
    assert given.port == 8000
