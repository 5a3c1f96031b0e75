from __future__ import annotations

import contextlib
import json
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
