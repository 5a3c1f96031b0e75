"""Scale-out behind real nginx: two proxy replicas, the shipped routing rules
(deploy/nginx/autellix.conf), and the replicas' own process tables as the judge.

Every program must live on exactly one replica with all its calls (explicit ones by
X-Program-Id, inferred ones by the client's key), and programs must spread over both."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
MODEL = "sim-llama-3.1-8b"
EXPLICIT_PROGRAMS = 24
KEYED_CLIENTS = 8

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; .ci/run does)"
)


def free_port() -> int:
    # nginx needs a port number in its config; take one the kernel says is free.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(prefix: Path, port: int, replicas: list[str]) -> Path:
    conf = prefix / "conf"
    (conf / "autellix").mkdir(parents=True)
    shutil.copy(ROOT / "deploy/nginx/autellix.conf", conf / "autellix.conf")
    (conf / "autellix/replicas.conf").write_text(
        "".join(f"server {r.removeprefix('http://')} max_fails=0;\n" for r in replicas)
    )
    (conf / "autellix/listen.conf").write_text(f"listen 127.0.0.1:{port};\n")
    for d in ("logs", "tmp"):
        (prefix / d).mkdir()
    # A non-daemon, single-process nginx confined to the temp prefix.
    main = conf / "nginx.conf"
    main.write_text(
        f"""daemon off;
master_process off;
pid {prefix}/logs/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include autellix.conf;
}}
"""
    )
    return main


@pytest.fixture
async def replicas() -> AsyncIterator[list[RunningProxy]]:
    fast = SimEngineConfig(time_scale=0.01)
    async with (
        running_proxy(ProxyConfig(port=0, sim=fast)) as one,
        running_proxy(ProxyConfig(port=0, sim=fast)) as two,
    ):
        yield [one, two]


@pytest.fixture
def nginx_url(tmp_path: Path, replicas: list[RunningProxy]) -> Iterator[str]:
    assert NGINX is not None
    port = free_port()
    main = write_config(tmp_path, port, [r.url for r in replicas])
    check = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    log = tmp_path / "logs/stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(main), "-e", "stderr"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail(f"nginx exited: {log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def chat(
    http: aiohttp.ClientSession, url: str, messages: list[dict[str, str]], headers: dict[str, str]
) -> tuple[str, str]:
    """One call through nginx; returns (the program id the replica filed it under, reply)."""
    body = {"model": MODEL, "messages": messages, "max_tokens": 8}
    async with http.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        return resp.headers["X-Program-Id"], data["choices"][0]["message"]["content"]


async def explicit_program(http: aiohttp.ClientSession, url: str, i: int) -> str:
    headers = {"X-Program-Id": f"run-{i}", "Authorization": "Bearer shared-key"}
    ids = {
        (await chat(http, url, [{"role": "user", "content": f"step {n} of run {i}"}], headers))[0]
        for n in range(2)
    }
    assert len(ids) == 1
    return ids.pop()


async def keyed_agent(http: aiohttp.ClientSession, url: str, i: int) -> str:
    """An agent that names no program: the proxy infers it from the resent conversation,
    which works only if both calls reach the same replica."""
    headers = {"Authorization": f"Bearer client-key-{i}"}
    messages = [{"role": "user", "content": f"task number {i}: plan it"}]
    first, reply = await chat(http, url, messages, headers)
    messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "go on"}]
    second, _ = await chat(http, url, messages, headers)
    assert second == first, "the resent conversation was not recognised: another replica?"
    return first


@needs_nginx
async def test_each_program_lives_on_one_replica_and_load_spreads(
    nginx_url: str, replicas: list[RunningProxy]
) -> None:
    async with aiohttp.ClientSession() as http:
        programs = await asyncio.gather(
            *(explicit_program(http, nginx_url, i) for i in range(EXPLICIT_PROGRAMS)),
            *(keyed_agent(http, nginx_url, i) for i in range(KEYED_CLIENTS)),
        )
        tables: list[dict[str, int]] = []
        for replica in replicas:  # asked directly, not through nginx
            async with http.get(replica.url + "/v1/programs", params={"limit": "1000"}) as resp:
                page = await resp.json()
            tables.append({p["id"]: p["calls"] for p in page["data"]})
    assert len(set(programs)) == EXPLICIT_PROGRAMS + KEYED_CLIENTS
    for program in programs:
        holders = [t[program] for t in tables if program in t]
        assert holders == [2], f"{program}: calls per replica holding it: {holders}"
    # Nothing else was filed anywhere: no call strayed into a program of its own.
    assert sum(len(t) for t in tables) == len(programs)
    counts = [len(t) for t in tables]
    assert min(counts) >= 1, f"all programs on one replica: {counts}"
