"""The example policy plug-in, installed by pip for real, found by its entry point, and used
by the proxy for live calls."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autellix-example-policy"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # Build from a copy: a build writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)
    # --no-deps: the proxy itself is already installed; --target keeps the shared venv clean.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    assert list(target.glob("autellix_example_policy-*.dist-info"))
    return target


async def test_proxy_schedules_with_the_installed_plugin(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(installed))
    config = ProxyConfig(
        port=0,
        policy="shortest-prompt",
        policy_config={"bucket_tokens": 100},
        sim=SimEngineConfig(time_scale=0.01),
    )
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        levels = []
        for words in (5, 500):
            body = {
                "model": "sim-llama-3.1-8b",
                "messages": [{"role": "user", "content": "word " * words}],
                "max_tokens": 3,
            }
            async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                levels.append(int(resp.headers["X-Autellix-Priority"]))
    # 5 words is well under one 100-token bucket; 500 words (~2,500 characters) is several.
    assert levels[0] == 0
    assert levels[1] >= 5
    sys.modules.pop("autellix_example_policy", None)
