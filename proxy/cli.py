"""The ``autellix`` command: ``serve`` (the proxy) and ``sim-engine`` (a simulated engine)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from proxy.config import ProxyConfig
from proxy.configfile import load_config, parse_engine_flag
from proxy.drain import drain
from proxy.errors import ConfigError
from proxy.preflight import check_config, describe_settings
from proxy.serve import install_uvloop, start_app
from proxy.server import resolve, sim_engine_config, start_proxy
from proxy.upkeep import settle_heap

log = logging.getLogger("autellix")

# A simulated engine and the proxy are often started side by side: not on the same port.
SIM_ENGINE_PORT = 8001


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", help="YAML, TOML or JSON config file (env: AUTELLIX_CONFIG)"
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        help=f"port to listen on (default: serve 8000, sim-engine {SIM_ENGINE_PORT})",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Program-aware scheduling proxy for OpenAI-compatible LLM engines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve", help="run the proxy (with no engine: an embedded simulated one)"
    )
    _common(serve)
    serve.add_argument(
        "--engine",
        action="append",
        metavar="SPEC",
        help="an engine: NAME=URL[,kind=vllm|sglang|openai|sim][,models=a|b] or a JSON object; "
        "repeat for several (replaces the config file's list)",
    )
    serve.add_argument(
        "--policy", help="scheduling policy: plas, atlas, mlfq, las, fcfs or a plug-in"
    )
    serve.add_argument(
        "--forward-client-auth",
        action="store_true",
        default=None,
        help="forward the client's Authorization header to engines",
    )
    sim = sub.add_parser("sim-engine", help="run a simulated OpenAI-compatible engine")
    _common(sim)
    sim.add_argument("--model", help="model name it serves")
    sim.add_argument("--time-scale", type=float, help="real seconds per simulated second")
    sim.add_argument("--preset", help="cost model preset (llama31-8b-a100, llama31-8b-h100)")
    # The benchmark's own flags are parsed by proxy.sim.simulator.bench, imported only when it
    # runs, so that serving never loads the simulator's event loop, sweep and plotting.
    sub.add_parser(
        "bench",
        add_help=False,
        help="sweep arrival rate x policy x workload in the discrete-event simulator "
        "(autellix bench --help for its flags)",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("host", "port", "log_level", "policy"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    if getattr(args, "engine", None):
        out["engines"] = [parse_engine_flag(spec) for spec in args.engine]
    if getattr(args, "forward_client_auth", None):
        out["forward_client_auth"] = True
    sim: dict[str, Any] = {}
    for flag, field in (
        ("model", "model"),
        ("time_scale", "time_scale"),
        ("preset", "cost_preset"),
    ):
        if getattr(args, flag, None) is not None:
            sim[field] = getattr(args, flag)
    if sim:
        out["sim"] = sim
    return out


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(config: ProxyConfig) -> None:
    proxy = await start_proxy(config)
    settle_heap()
    engines = ", ".join(f"{e.name} ({e.kind}, {e.url})" for e in proxy.config.engines)
    log.info("autellix proxy listening on %s; engines: %s", proxy.url, engines)
    log.info("%s", describe_settings(proxy.config))
    log.info("point an OpenAI client at %s/v1", proxy.url)
    try:
        await _wait_for_signal()
        await drain(proxy, proxy.config.shutdown_grace_s)
    finally:
        await proxy.stop()  # after a drain, nothing is left to stop


async def _sim_engine(config: ProxyConfig) -> None:
    # Imported here: the simulated engine's server is no part of a serving proxy's memory.
    from proxy.sim.engine.server import create_sim_app

    sim = sim_engine_config(config)
    runner, port = await start_app(create_sim_app(sim), config.host, config.port)
    log.info("simulated engine (model %s) listening on http://%s:%d", sim.model, config.host, port)
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()


def _bench(argv: list[str]) -> int:
    from proxy.sim.simulator.bench import add_bench_arguments, run_bench

    parser = argparse.ArgumentParser(
        prog="autellix bench",
        description="Reproduce the paper's throughput-at-equal-latency comparison in the "
        "simulator (no GPU); see docs/simulator.md.",
    )
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


def effective_config(args: argparse.Namespace) -> ProxyConfig:
    """The config the command runs with, checked before anything starts (``ConfigError``)."""
    config = resolve(load_config(args.config, overrides=_overrides(args)))
    if args.command == "serve":
        check_config(config)
    elif "port" not in config.model_fields_set:  # sim-engine: not on the proxy's port
        config = config.model_copy(update={"port": SIM_ENGINE_PORT})
    return config


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        config = effective_config(args)
    except ConfigError as exc:
        print(f"autellix: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_uvloop()
    runner = _serve if args.command == "serve" else _sim_engine
    try:
        asyncio.run(runner(config))
    except ConfigError as exc:  # found only as it starts (e.g. a trace file it cannot open)
        print(f"autellix: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the port is taken
        print(f"autellix: cannot start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
