"""The ``postback-hub`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from postback_hub.consumers.registry import load_settings
from postback_hub.service.settings import ConfigError, Settings

# Addresses settable from the environment (and, through the flags that set these, from
# the command line). Child processes inherit them, so every worker and consumer of a
# `run` sees the same values. Flag beats environment beats configuration file.
_OVERRIDES = {
    "host": "POSTBACK_HUB_HOST",
    "port": "POSTBACK_HUB_PORT",
    "bootstrap_servers": "POSTBACK_HUB_BOOTSTRAP_SERVERS",
}


def child_environment(args: argparse.Namespace) -> dict[str, str]:
    """The address overrides in force (a flag over the environment), as the environment
    variables the supervisor hands its children. This process's own environment is left
    as it is."""
    values = {
        variable: os.environ[variable]
        for variable in _OVERRIDES.values()
        if os.environ.get(variable)
    }
    for option, variable in _OVERRIDES.items():
        value = getattr(args, option, None)
        if value is not None:
            values[variable] = str(value)
    return values


def _load(args: argparse.Namespace) -> Settings:
    """The configuration with the address overrides of the command line and environment."""
    overrides = child_environment(args)
    settings = load_settings(args.config)
    receiver: dict[str, object] = {}
    if host := overrides.get(_OVERRIDES["host"]):
        receiver["host"] = host
    if port := overrides.get(_OVERRIDES["port"]):
        receiver["port"] = _port(port, _OVERRIDES["port"])
    kafka: dict[str, object] = {}
    if servers := overrides.get(_OVERRIDES["bootstrap_servers"]):
        kafka["bootstrap_servers"] = servers
    return settings.model_copy(
        update={
            "receiver": settings.receiver.model_copy(update=receiver),
            "kafka": settings.kafka.model_copy(update=kafka),
        }
    )


def _port(text: str, variable: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ConfigError([f"{variable}: not a port number: {text!r}"])
    return int(text)


def _add_addresses(parser: argparse.ArgumentParser, *, receiver: bool) -> None:
    if receiver:
        parser.add_argument(
            "--host", help="receiver address (env POSTBACK_HUB_HOST; default: receiver.host)"
        )
        parser.add_argument(
            "--port",
            type=int,
            help="receiver port (env POSTBACK_HUB_PORT; default: receiver.port)",
        )
    parser.add_argument(
        "--bootstrap-servers",
        help="Kafka host:port list (env POSTBACK_HUB_BOOTSTRAP_SERVERS; default: "
        "kafka.bootstrap_servers)",
    )


def _serve(args: argparse.Namespace) -> int:
    from postback_hub.service.port_claim import PortTaken, claim_port, deployment_id
    from postback_hub.service.server import run_worker, worker_count
    from postback_hub.supervisor import child_commands, supervise

    settings = _load(args)
    workers = args.workers if args.workers is not None else worker_count(settings)
    destinations = (
        [name for name, d in settings.destinations.items() if d.enabled]
        if args.command == "run"
        else []
    )
    receiver = settings.receiver
    deployment = deployment_id(args.config, receiver.deployment)
    try:
        with claim_port(receiver.host, receiver.port, deployment):
            reconcile = args.command == "run" and settings.reconcile.enabled
            if workers == 1 and not destinations and not reconcile:
                return run_worker(settings)
            kpi_api = args.command == "run" and any(
                d.enabled and d.type == "kpi" for d in settings.destinations.values()
            )
            plan = child_commands(
                args.config, workers, destinations, kpi_api=kpi_api, reconcile=reconcile
            )
            return supervise(args.config, plan, child_environment(args))
    except PortTaken as exc:
        print(f"postback-hub: {exc}", file=sys.stderr)
        return 1


def _kpi_serve(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from postback_hub.kpi.api import serve_kpi_api
    from postback_hub.service.logs import configure_logging
    from postback_hub.service.server import event_loop_factory

    settings = _load(args)
    if args.kpi_port is not None:
        settings = settings.model_copy(
            update={"kpi": settings.kpi.model_copy(update={"port": args.kpi_port})}
        )
    configure_logging(settings.logging.level)
    # A client written for Adjust's KPI Service addresses an app by its Adjust app token.
    app_tokens = {
        app.adjust.app_token: key for key, app in settings.apps.items() if app.adjust is not None
    }

    async def serve() -> None:
        task = asyncio.ensure_future(serve_kpi_api(settings, app_tokens=app_tokens))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with asyncio.Runner(loop_factory=event_loop_factory) as runner:
        runner.run(serve())
    return 0


def _consume(args: argparse.Namespace) -> int:
    from postback_hub.consumers.process import run_consumer

    settings = _load(args)
    if args.destination not in settings.destinations:
        known = ", ".join(sorted(settings.destinations)) or "none configured"
        print(f"no destination {args.destination!r} (known: {known})", file=sys.stderr)
        return 2
    health_port = args.health_port
    if health_port is None and (text := os.environ.get("POSTBACK_HUB_HEALTH_PORT")):
        health_port = _port(text, "POSTBACK_HUB_HEALTH_PORT")
    return run_consumer(settings, args.destination, health_port)


def _worker(args: argparse.Namespace) -> int:
    from postback_hub.service.server import run_worker

    return run_worker(_load(args))


def _tail(args: argparse.Namespace) -> int:
    import asyncio

    from postback_hub.service.tail import tail

    settings = load_settings(args.config, app_secrets=False)
    try:
        return asyncio.run(tail(settings, args.count, args.follow, args.unmasked))
    except KeyboardInterrupt:
        return 0


def _dlq(args: argparse.Namespace) -> int:
    import asyncio

    from postback_hub.consumers.dlq import Filters, list_dead_letters, replay_dead_letters

    settings = load_settings(args.config, app_secrets=False)
    if args.destination not in settings.destinations:
        print(f"no destination {args.destination!r}", file=sys.stderr)
        return 2
    filters = Filters(args.reason, args.app, args.kind, args.fingerprint)
    if args.action == "list":
        return asyncio.run(list_dead_letters(settings, args.destination, filters))
    return asyncio.run(
        replay_dead_letters(
            settings, args.destination, filters, dry_run=args.dry_run, again=args.again
        )
    )


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    print(f"{args.file}: OK ({len(settings.apps)} app(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from postback_hub.service import localkafka

    parser = argparse.ArgumentParser(
        prog="postback-hub",
        description="Receive Adjust callbacks, queue them on Kafka, forward them to partners.",
    )
    # A metavar, so the hidden `worker` command is not listed among the choices.
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP receiver only",
        description="Run the HTTP receiver (receiver.workers processes sharing its port) "
        "and no consumer; `run` adds a consumer for every enabled destination.",
    )
    serve.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    serve.add_argument("--workers", type=int, help="receiver processes (default: receiver.workers)")
    _add_addresses(serve, receiver=True)
    serve.set_defaults(func=_serve)

    run = commands.add_parser(
        "run", help="run the receiver and a consumer for every enabled destination"
    )
    run.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    run.add_argument("--workers", type=int, help="receiver processes (default: receiver.workers)")
    _add_addresses(run, receiver=True)
    run.set_defaults(func=_serve)

    tail = commands.add_parser("tail", help="print the newest callback records (masked)")
    tail.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    tail.add_argument("-n", "--count", type=int, default=10, help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    tail.add_argument(
        "--unmasked", action="store_true", help="show device ids and IPs (personal data!)"
    )
    tail.set_defaults(func=_tail)

    consume = commands.add_parser("consume", help="run one destination's consumer")
    consume.add_argument("destination", help="a key under [destinations]")
    consume.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    consume.add_argument(
        "--health-port",
        "--port",
        dest="health_port",
        type=int,
        help="serve /healthz, /readyz, /metrics here (env POSTBACK_HUB_HEALTH_PORT)",
    )
    _add_addresses(consume, receiver=False)
    consume.set_defaults(func=_consume)

    dlq = commands.add_parser("dlq", help="list or replay a destination's dead letters")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("destination", help="a key under [destinations]")
    dlq.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    dlq.add_argument("--reason", help="only reasons starting with this, e.g. http_400")
    dlq.add_argument("--app", help="only this app")
    dlq.add_argument("--kind", help="only this activity kind")
    dlq.add_argument("--fingerprint", help="only this activity")
    dlq.add_argument("--dry-run", action="store_true", help="replay: count, send nothing")
    dlq.add_argument("--again", action="store_true", help="replay: include letters replayed before")
    dlq.set_defaults(func=_dlq)

    # Internal (one receiver process of a supervisor): no help, so not listed.
    worker = commands.add_parser("worker")
    worker.add_argument("--config", type=Path, required=True)
    worker.set_defaults(func=_worker)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check_config)

    kpi = commands.add_parser("kpi", help="the KPI API over our own rollups")
    kpi_commands = kpi.add_subparsers(dest="kpi_command", metavar="COMMAND", required=True)
    kpi_serve = kpi_commands.add_parser(
        "serve",
        help="serve the Adjust-compatible KPI API (run starts it with a kpi destination)",
        description="Serve /kpis/v1/{app_token} on kpi.host:kpi.port until SIGTERM.",
    )
    kpi_serve.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    kpi_serve.add_argument("--kpi-port", type=int, help="port (default: kpi.port)")
    kpi_serve.set_defaults(func=_kpi_serve)

    localkafka.register_cli(commands)
    from postback_hub.consumers.x import commands as x_cli

    x_cli.register_cli(commands)
    from postback_hub.adjust import commands as adjust_cli

    adjust_cli.register_cli(commands)
    from postback_hub.adjust import reconcile_commands

    reconcile_commands.register_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"configuration: {problem}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
