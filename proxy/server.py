"""Starting a whole proxy: the embedded simulated engine when no engine is configured, then
the proxy itself. Used by the CLI and by the end-to-end tests, so both start it the same way.

This is the one module of the live proxy that imports the simulator (``proxy.sim``): it reads
the ``sim`` settings, starts the embedded engine, and derives the default service weights from
the simulated engine's cost model. The app, the routes and the request path never import it.
A proxy in front of real engines with no ``sim`` settings loads the cost model only: the
settings' model and the engine model it imports (about 0.7 MiB resident) are imported when there
are settings to check or an engine to embed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import ValidationError

from proxy.app import create_app
from proxy.config import EngineConfig, ProxyConfig
from proxy.configfile import format_validation_error
from proxy.errors import ConfigError
from proxy.preflight import check_config
from proxy.serve import bind, start_app
from proxy.sim.engine.cost import DEFAULT_PRESET, PRESETS

if TYPE_CHECKING:
    from proxy.sim.engine.config import SimEngineConfig

log = logging.getLogger("autellix")


@dataclass(slots=True)
class RunningProxy:
    url: str
    config: ProxyConfig  # with the embedded engine filled in, if one was started
    app: web.Application
    sim_url: str | None = None
    runners: list[web.AppRunner] = field(default_factory=list)

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()


def sim_engine_config(config: ProxyConfig) -> SimEngineConfig:
    """The simulated engine's settings (``config.sim``), checked; a bad one is a
    ``ConfigError`` naming its field (``sim.time_scale``)."""
    from proxy.sim.engine.config import SimEngineConfig

    try:
        return SimEngineConfig.model_validate(config.sim)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "sim settings", within=("sim",))) from exc


def resolve(config: ProxyConfig) -> ProxyConfig:
    """``config`` with what it leaves to the simulated engine filled in: the service weights
    that are unset come from its cost model (docs/identification.md, "Service"). Checks the
    ``sim`` settings whether or not an embedded engine will run."""
    # No settings are valid settings, whose cost model is the default preset's.
    cost = sim_engine_config(config).cost_model() if config.sim else PRESETS[DEFAULT_PRESET]()
    programs = config.programs
    if programs.decode_token_s is not None and programs.prefill_token_s is not None:
        return config
    prefill, decode = cost.service_weights()
    weights = {
        "decode_token_s": programs.decode_token_s or decode,
        "prefill_token_s": programs.prefill_token_s or prefill,
    }
    return config.model_copy(update={"programs": programs.model_copy(update=weights)})


async def start_proxy(config: ProxyConfig) -> RunningProxy:
    config = resolve(config)
    check_config(config)  # before anything starts, the embedded engine included
    sock = bind(config.host, config.port)  # a taken port, too, stops start-up here
    runners: list[web.AppRunner] = []
    sim_url = None
    if not config.engines:
        # Imported only to embed it: a proxy in front of real engines never loads the
        # simulated engine's server and models (about 2 MiB resident).
        from proxy.sim.engine.server import create_sim_app

        sim = sim_engine_config(config)
        try:
            sim_runner, sim_port = await start_app(create_sim_app(sim), "127.0.0.1", 0)
        except BaseException:
            sock.close()
            raise
        runners.append(sim_runner)
        sim_url = f"http://127.0.0.1:{sim_port}"
        log.info(
            "no engine configured: serving an embedded simulated engine (model %s, time scale %g) at %s",
            sim.model,
            sim.time_scale,
            sim_url,
        )
        engine = EngineConfig(name="sim", url=sim_url, kind="sim", models=sim.served_names())
        config = config.model_copy(update={"engines": [engine]})
    try:
        app = create_app(config)
        runner, port = await start_app(app, sock=sock)
    except BaseException:
        sock.close()
        for r in runners:
            await r.cleanup()
        raise
    runners.append(runner)
    host = f"[{config.host}]" if ":" in config.host else config.host
    return RunningProxy(
        url=f"http://{host}:{port}", config=config, app=app, sim_url=sim_url, runners=runners
    )


@contextlib.asynccontextmanager
async def running_proxy(config: ProxyConfig) -> AsyncIterator[RunningProxy]:
    proxy = await start_proxy(config)
    try:
        yield proxy
    finally:
        await proxy.stop()
