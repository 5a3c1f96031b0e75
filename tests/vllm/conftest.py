"""One real vLLM (CPU) server per test session, running the Autellix scheduler plug-in.

Start-up costs about a minute (torch compile), so the server is session-scoped and shared:
tests must leave it idle (every request finished or aborted) when they end. The tests live in
a separate virtual environment with vLLM (see docs/vllm.md); without vLLM they are skipped.

Other test modules (the proxy-through-vLLM tests) reuse ``vllm_server``: it gives the base
URL, the served model name, the scheduler's event record and the control channel's address.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.vllm.tinymodel import make_tiny_llama

MODEL_NAME = "tiny"
SCHEDULER_CLS = "proxy.backends.vllm_plugin.scheduler.AutellixScheduler"
MAX_NUM_SEQS = 2  # few slots, so that a third call must wait or preempt
MAX_MODEL_LEN = 4096
START_TIMEOUT_S = 240.0  # compile takes 25-55 s alone; a loaded CI machine is slower
STOP_TIMEOUT_S = 30.0
ENGINE_NICE = 19  # the engine busy-waits on 2 cores; the API server must keep up with it


NO_VLLM = "vllm is not installed in this environment (see docs/vllm.md for its venv)"


def skip_module_without_vllm() -> None:
    """Skip the calling test module, at import, where vLLM is not installed: call it before
    the module's imports that need vLLM."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip(NO_VLLM, allow_module_level=True)


def _vllm_missing() -> str | None:
    """Why vLLM cannot be used here, or None. The import runs in a child process: importing
    vLLM loads torch and touches process-wide state the test process has no use for."""
    if importlib.util.find_spec("vllm") is None:
        return NO_VLLM
    done = subprocess.run(
        [sys.executable, "-c", "import vllm"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return "import vllm fails: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _descendants(root: int) -> list[int]:
    """Child processes of ``root``, recursively, from /proc (psutil is not a test dependency)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _renice(pids: list[int], nice: int) -> None:
    """Lower the priority of every thread of ``pids``: on Linux a nice value belongs to a
    thread, and the engine's busy threads (OpenMP workers, the core loop) already exist."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/vllm is a ``vllm`` test, whether or not its module says so."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.vllm)


@dataclass(frozen=True)
class VLLMServer:
    """A running vLLM with the Autellix scheduler."""

    base_url: str
    model: str
    sched_log: Path  # the scheduler's JSON-lines event record (AUTELLIX_PLUGIN_SCHED_LOG)
    control_addr: (
        str  # where the scheduler's control channel listens (AUTELLIX_PLUGIN_CONTROL_ADDR)
    )
    server_log: Path
    kv_events_addr: str  # where vLLM publishes its KV cache events (--kv-events-config)

    def events(self) -> list[dict[str, Any]]:
        """The scheduler's record so far (whole lines only: it may be mid-write)."""
        if not self.sched_log.exists():
            return []
        text = self.sched_log.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    async def wait_events(
        self,
        until: Callable[[list[dict[str, Any]]], bool],
        *,
        within: float = 60.0,
        what: str = "events",
    ) -> list[dict[str, Any]]:
        """Poll the record until ``until(events)`` holds; fail with the record's tail if not.
        Async, so the test's own clients keep reading their streams meanwhile."""
        deadline = time.monotonic() + within
        while True:
            events = self.events()
            if until(events):
                return events
            if time.monotonic() > deadline:
                tail = "\n".join(json.dumps(e) for e in events[-20:])
                pytest.fail(f"timed out waiting for {what}; last events:\n{tail}")
            await asyncio.sleep(0.05)


class ServerFailed(RuntimeError):
    """The server did not start; the message ends with the tail of its log."""


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise ServerFailed(f"vLLM exited with {proc.returncode} during start-up:\n{tail}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "/health", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:]
    raise ServerFailed(f"vLLM did not become healthy in {START_TIMEOUT_S:.0f} s:\n{tail}")


def _warm_up(url: str) -> None:
    """One short call of each kind before the tests: the API server builds parts of its
    request path on first use, and a test's first call should not pay for that."""
    for stream in (False, True):
        payload = {"model": MODEL_NAME, "prompt": "warm up", "max_tokens": 4, "stream": stream}
        request = urllib.request.Request(
            url + "/v1/completions",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            resp.read()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # The API server stops its engine and workers itself; its process group (it runs in a
    # session of its own) is killed only if it does not.
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # stragglers of that group, if any
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def serve(
    root: Path, *, args: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> Iterator[VLLMServer]:
    """Make the tiny model under ``root``, start vLLM on it with the plug-in, stop it on exit.
    Usable outside pytest (``ServerFailed`` if it does not come up). ``args`` go after the
    defaults (a repeated flag overrides one); ``environ`` adds to the engine's environment."""
    model_dir = make_tiny_llama(root / "model")
    port, control_port = _free_port(), _free_port()
    server = VLLMServer(
        base_url=f"http://127.0.0.1:{port}",
        model=MODEL_NAME,
        sched_log=root / "sched.jsonl",
        control_addr=f"tcp://127.0.0.1:{control_port}",
        server_log=root / "server.log",
        # ipc: vLLM binds it (a tcp endpoint without a wildcard it would connect to).
        kv_events_addr=f"ipc://{root}/kv-events",
    )
    env = dict(os.environ)
    # vLLM seeds its block hashes with PYTHONHASHSEED when set: the proxy's kv_hash_seed would
    # have to match, so the engine runs with its default seed, as docs/routing.md advises.
    env.pop("PYTHONHASHSEED", None)
    for name in ("TMPDIR", "VLLM_CACHE_ROOT", "VLLM_RPC_BASE_PATH", "TORCHINDUCTOR_CACHE_DIR"):
        folder = root / name.lower()
        folder.mkdir()
        env[name] = str(folder)
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",  # GiB; the default asks NUMA node 0 for more than it has
        VLLM_SERVER_DEV_MODE="1",  # /abort_requests, /pause, /resume
        AUTELLIX_PLUGIN_SCHED_LOG=str(server.sched_log),
        AUTELLIX_PLUGIN_CONTROL_ADDR=server.control_addr,
        PYTHONUNBUFFERED="1",
    )
    env.update(environ or {})
    command = [
        sys.executable,
        *("-m", "vllm.entrypoints.openai.api_server"),
        *("--model", str(model_dir), "--served-model-name", MODEL_NAME),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--scheduler-cls", SCHEDULER_CLS, "--scheduling-policy", "priority"),
        *("--max-num-seqs", str(MAX_NUM_SEQS), "--max-model-len", str(MAX_MODEL_LEN)),
        "--disable-log-stats",
        *("--prefix-caching-hash-algo", "sha256"),  # the proxy hashes tokens the same way
        "--kv-events-config",
        json.dumps(
            {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": server.kv_events_addr}
        ),
        *args,
    ]
    with server.server_log.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(proc, server.base_url, server.server_log)
        _renice(_descendants(proc.pid), ENGINE_NICE)
        _warm_up(server.base_url)
        yield server
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """The session's vLLM server (skips the test when vLLM cannot be imported)."""
    missing = _vllm_missing()
    if missing is not None:
        pytest.skip(missing)
    try:
        with serve(tmp_path_factory.mktemp("vllm")) as server:
            yield server
    except ServerFailed as exc:
        pytest.fail(str(exc))
