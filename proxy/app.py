"""The application factory: everything a proxy instance needs, built from one config object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from proxy import security
from proxy.admin import admin_routes
from proxy.auth import KeyTable, load_keys
from proxy.backends.registry import make_backend
from proxy.backends.vllm_control import ControlChannel
from proxy.config import ProgramsConfig, ProxyConfig
from proxy.core import lifecycle
from proxy.drain import DRAIN, Drain
from proxy.errors import ConfigError
from proxy.gate import Gate, GateConfig
from proxy.ids import IdGen
from proxy.intercept.identify import Identifier, IdentifyConfig
from proxy.kvhints.balancers.registry import BalancerRegistry
from proxy.kvhints.breaker import Breaker
from proxy.kvhints.hashmap import HashMap
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.learn import Learner
from proxy.kvhints.pool import EnginePool
from proxy.kvhints.router import Router
from proxy.kvhints.subscriber import subscribe
from proxy.metrics import Metrics
from proxy.middleware import METRICS, edge_middleware
from proxy.policies.base import Policy, program_scalar
from proxy.policies.registry import PolicyRegistry
from proxy.policies.tenant import with_tenant_fairness
from proxy.records import Program
from proxy.relay import upstream_session
from proxy.routes import add_routes
from proxy.scheduler import Scheduler
from proxy.serve import background
from proxy.state import STATE, TABLE, ProxyState
from proxy.table import ProcessTable, TableConfig
from proxy.trace import TraceRecorder
from proxy.upkeep import GcPolicy, sweep
from proxy.wallclock import WALL_CLOCK, WallClock

log = logging.getLogger("autellix")


def table_config(programs: ProgramsConfig) -> TableConfig:
    """The service weights must be set: ``proxy.server.resolve`` (which ``start_proxy`` runs)
    fills unset ones from the simulated engine's cost model, a generated token costing one
    decode step of a moderately loaded engine. Engines with other speeds scale every program's
    service alike, so the order the policy gives is the same; set the weights for absolute
    figures (in seconds of engine time) that match your hardware."""
    if programs.decode_token_s is None or programs.prefill_token_s is None:
        raise ConfigError(
            "programs.decode_token_s and programs.prefill_token_s are unset: build the config "
            "with proxy.server.resolve (start_proxy does), or set both"
        )
    return TableConfig(
        service_unit=programs.service_unit,
        decode_token_s=programs.decode_token_s,
        prefill_token_s=programs.prefill_token_s,
        idle_ttl_s=programs.idle_ttl_s,
        max_programs=programs.max_programs,
    )


def identify_config(programs: ProgramsConfig) -> IdentifyConfig:
    defaults = IdentifyConfig()
    # None keeps the built-in lists; an empty list turns that source off.
    session_headers = (
        defaults.session_headers if programs.session_headers is None else programs.session_headers
    )
    body_fields = defaults.body_fields if programs.body_fields is None else programs.body_fields
    return IdentifyConfig(
        session_headers=tuple(session_headers),
        use_traceparent=programs.use_traceparent,
        body_fields=tuple(body_fields),
        infer=programs.infer,
        prefix_capacity=programs.prefix_capacity,
        tenant_header=programs.tenant_header,
        hash_key=None
        if programs.hash_key is None
        else programs.hash_key.get_secret_value().encode(),
    )


def build_policy(config: ProxyConfig, weights: dict[str, float] | None = None) -> Policy:
    """The configured policy; clairvoyant ones (srpt) are refused: only the simulator knows
    the future they read. ``weights``: tenants' key weights, when keys are configured."""
    settings = with_tenant_fairness(config.policy, config.policy_config, weights or {})
    return PolicyRegistry().create(config.policy, settings, live=True)


def build_router(config: ProxyConfig, pool: EnginePool) -> Router:
    """The configured balancer behind the gate, with a prefix index. The simulated engine's
    KV events name the blocks the proxy computes; vLLM's hash token ids, so what the proxy
    routed to them is recorded too, until their own hashes of a prompt are learned
    (``proxy.kvhints.learn``; docs/routing.md)."""
    routing = config.routing
    exact = {e.name for e in config.engines if e.kv_events_url and e.kind == "sim"}
    learned = any(
        e.kind == "vllm" and e.kv_events_url and e.kv_hash_algo != "none" for e in config.engines
    )

    def healthy(name: str) -> bool:
        engine = pool.engines.get(name)
        return engine is not None and engine.healthy

    return Router(
        BalancerRegistry().create(routing.balancer, routing.tuning()),
        index=PrefixIndex(routing.index_blocks),
        block_tokens=routing.block_tokens,
        healthy=healthy,
        approximate=lambda name: name not in exact,
        hashes=HashMap(routing.index_blocks) if learned else None,
    )


def build_scheduler(
    config: ProxyConfig, metrics: Metrics, ids: IdGen, weights: dict[str, float] | None = None
) -> Scheduler:
    policy = build_policy(config, weights)
    table = ProcessTable(
        table_config(config.programs),
        on_finish=lifecycle.policy_hook(policy),
        ids=ids,
    )
    return Scheduler(
        table=table,
        policy=policy,
        identifier=Identifier(identify_config(config.programs)),
        metrics=metrics,
        clock=time.monotonic,
    )


async def _engines_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    session = upstream_session()
    state.session = session
    await state.pool.refresh(session)
    for engine in state.pool.engines.values():
        state.metrics.engine_healthy.labels(engine.name).set(1 if engine.healthy else 0)
        if not engine.healthy:
            log.warning(
                "engine %s is not reachable at start-up: %s", engine.name, engine.last_error
            )
    try:
        async with background(_poll(state), "autellix-engine-poller"):
            yield
    finally:
        if state.tasks:
            await asyncio.wait(set(state.tasks), timeout=5)
        await session.close()
        state.session = None


async def _collector_ctx(app: web.Application) -> AsyncIterator[None]:
    """Forget programs that have been idle longer than their TTL, now and then."""
    state = app[STATE]

    async def collect() -> None:
        gc_policy = GcPolicy()
        while True:
            await asyncio.sleep(state.config.programs.collect_interval_s)
            await sweep(
                state.scheduler.table,
                state.scheduler.clock,
                gc_policy,
                on_forget=lambda p: _forget(state, p),
            )

    async with background(collect(), "autellix-table-collector"):
        yield


async def _kv_events_ctx(app: web.Application) -> AsyncIterator[None]:
    """Read the KV events of engines that publish them into the prefix index."""
    state = app[STATE]
    router = state.gate.router
    sources = {e.name: e.kv_events_url for e in state.config.engines if e.kv_events_url}
    if not sources or router.index is None:
        yield
        return
    async with contextlib.AsyncExitStack() as stack:
        for name, url in sources.items():
            feed = subscribe(router.index, name, url, router.events)
            await stack.enter_async_context(background(feed, f"autellix-kv-events-{name}"))
        yield


def _forget(state: ProxyState, program: Program) -> None:
    state.metrics.program_ended(program)
    state.gate.router.forget(program.id)


async def _control_ctx(app: web.Application) -> AsyncIterator[None]:
    """Push programs' service to engines running the scheduler plug-in, as calls finish."""
    state = app[STATE]
    addresses = {e.name: e.control_url for e in state.config.engines if e.control_url}
    if not addresses:
        yield
        return
    channels = [ControlChannel(address) for address in addresses.values()]
    policy = state.scheduler.policy

    def push(program: Program) -> None:
        service = program_scalar(policy, program)
        for channel in channels:
            state.spawn(_send_quietly(channel.send_program_service(program.id, service)))

    state.scheduler.on_program_update = push
    log.info("pushing program service to scheduler plug-ins at %s", ", ".join(addresses.values()))
    try:
        yield
    finally:
        state.scheduler.on_program_update = None
        for channel in channels:
            channel.close()


async def _send_quietly(send: Coroutine[Any, Any, bool]) -> None:
    # A lost update only leaves an engine's ranking a little stale; never fail a call for it.
    try:
        await send
    except Exception:
        log.warning("could not push a program's service to an engine", exc_info=True)


async def _trace_ctx(app: web.Application) -> AsyncIterator[None]:
    """Record finished calls as a trace, when configured."""
    state = app[STATE]
    if state.config.trace_file is None:
        yield
        return
    try:
        recorder = TraceRecorder.open(state.config.trace_file, time_offset=app[WALL_CLOCK].offset)
    except OSError as exc:
        raise ConfigError(
            f"cannot open trace_file {state.config.trace_file!r}: {exc.strerror}"
        ) from exc
    state.scheduler.recorder = recorder
    log.info("recording calls to %s", state.config.trace_file)
    try:
        yield
    finally:
        state.scheduler.recorder = None
        recorder.close()


async def _poll(state: ProxyState) -> None:
    while True:
        await asyncio.sleep(state.config.health_interval_s)
        try:
            await state.pool.refresh(state.client())
        except Exception:  # the poller must outlive any one bad answer
            log.exception("engine refresh failed")
        for engine in state.pool.engines.values():
            state.metrics.engine_healthy.labels(engine.name).set(1 if engine.healthy else 0)
        # An engine back in health, with models listed anew or a queue of its own drained, may
        # take waiting calls now, and a model no engine serves any more fails its waiters.
        state.gate.dispatch()


def create_app(config: ProxyConfig) -> web.Application:
    """Build a proxy for ``config.engines``. (The embedded simulated engine, used when the
    list is empty, is started by ``proxy.server``, which then passes it in as an engine.)"""
    metrics = Metrics()
    ids = IdGen()
    keys = KeyTable(load_keys(config))
    scheduler = build_scheduler(config, metrics, ids, keys.weights)
    drain = Drain()
    edge = edge_middleware(metrics, keys, drain, config.max_body_bytes)
    app = web.Application(middlewares=[edge], client_max_size=config.max_body_bytes)
    viewer_of = security.install(app, config, scheduler.identifier, keys)
    app[DRAIN] = drain
    app[METRICS] = metrics
    app[TABLE] = scheduler.table
    app[WALL_CLOCK] = WallClock.capture()
    routing = config.routing
    pool = EnginePool(
        (make_backend(e) for e in config.engines),
        breaker=Breaker(routing.breaker_backoff_s, routing.breaker_max_backoff_s),
        clock=scheduler.clock,
    )
    router = build_router(config, pool)
    gate = Gate(
        pool,
        scheduler.policy,
        GateConfig(**config.gate.model_dump()),
        scheduler.clock,
        router=router,
    )
    metrics.add_collector(router.collector(lambda: list(pool.engines)))
    metrics.gate_waiting.set_function(lambda: gate.queued)
    metrics.programs.set_function(lambda: len(scheduler.table))
    metrics.watch(
        waiting_levels=lambda: (w.rank.level for w in gate.core.queue),
        engine_load=lambda: (
            (e.name, e.load.running, e.load.waiting, e.load.kv_usage) for e in pool.engines.values()
        ),
    )
    app[STATE] = ProxyState(
        config=config, metrics=metrics, pool=pool, scheduler=scheduler, gate=gate, ids=ids
    )
    state = app[STATE]
    if router.hashes is not None:
        state.learner = Learner(router, state.client, state.spawn)
    app.cleanup_ctx.append(_engines_ctx)
    app.cleanup_ctx.append(_collector_ctx)
    app.cleanup_ctx.append(_control_ctx)
    app.cleanup_ctx.append(_kv_events_ctx)
    app.cleanup_ctx.append(_trace_ctx)
    app.router.add_routes(
        admin_routes(TABLE, viewer_of, WALL_CLOCK)
    )  # before the catch-all /v1 route
    add_routes(app)
    return app
