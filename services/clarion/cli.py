"""The `clarion` command: `up` (everything locally), `serve` (one service, for Kubernetes), `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from clarion import app
from clarion.core.config import Settings, SettingsError, load_settings
from clarion.core.db import migrate
from clarion.core.logging import configure_logging, get_logger
from clarion.core.server import PortInUseError
from clarion.gateway import kubernetes
from clarion.gateway.errors import GatewayError

log = get_logger(__name__)


class UsageError(Exception):
    """The command cannot run as asked; the message says why and what to do."""


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # Windows has no uvloop; asyncio's loop is fine there.
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _say(text: str) -> None:
    """Output meant for the person at the terminal (logs are JSON lines, on stdout too)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise UsageError("CLARION_DATABASE_URL is not set: point it at PostgreSQL (or use `clarion up`)")
    return settings.database_url


def _local_or_configured_database(settings: Settings) -> str:
    """CLARION_DATABASE_URL, or else the embedded PostgreSQL that `clarion up` keeps in the data dir."""
    if settings.database_url is None and (settings.data_dir / "postgres" / "PG_VERSION").exists():
        from clarion.core.embedded_postgres import start_embedded_postgres

        return start_embedded_postgres(settings.data_dir)
    return _database_url(settings)


def cmd_up(settings: Settings) -> None:
    """Local mode: embedded PostgreSQL unless CLARION_DATABASE_URL is set, migrations, every service on one port,
    and Envoy in front of it serving REST and gRPC on CLARION_HTTP_PORT."""
    from clarion.core.embedded_postgres import start_embedded_postgres
    from clarion.gateway.local import check_http_port, serve_behind_gateway

    check_http_port(settings)
    database_url = settings.database_url or start_embedded_postgres(settings.data_dir)

    database = "CLARION_DATABASE_URL" if settings.database_url else f"embedded PostgreSQL in {settings.data_dir}"

    def started(port: int) -> None:
        address = f"{settings.grpc_host}:{port}"
        edge = f"{settings.http_host}:{settings.http_port}"
        _say(
            "\nClarion is up (local mode).\n"
            f"  REST      http://{edge}   try: curl http://{edge}/v1/health\n"
            f"  gRPC      {address}   try: grpcurl -plaintext {address} list   (also on {edge}, through Envoy)\n"
            f"  database  {database}\n"
            "Press Ctrl-C to stop.\n"
        )

    async def main() -> None:
        await migrate(database_url)
        await serve_behind_gateway(
            settings,
            lambda on_started, stop: app.serve(
                settings,
                list(app.SERVICES),
                database_url=database_url,
                workers=app.WORKER_KINDS,
                on_started=on_started,
                stop=stop,
            ),
            on_ready=started,
        )

    _run(main())


def cmd_serve(settings: Settings, service: str) -> None:
    """One service (or all) in this process, as in Kubernetes."""
    database_url = _database_url(settings)
    names = list(app.SERVICES) if service == "all" else [service]
    _run(app.serve(settings, names, database_url=database_url))


def cmd_worker(settings: Settings, kind: str) -> None:
    """A background worker, as in Kubernetes."""
    database_url = _database_url(settings)
    _run(app.run_worker(settings, kind, database_url=database_url))


def cmd_deliveries(settings: Settings, *, limit: int, status: str, channel: str) -> None:
    """Print recent deliveries with their attempts and last error."""
    from clarion.core.db import create_engine, session_factory
    from clarion.delivery.report import format_report, recent_deliveries

    database_url = _local_or_configured_database(settings)

    async def main() -> None:
        engine = create_engine(database_url, settings=settings)
        try:
            lines = await recent_deliveries(session_factory(engine), limit=limit, status=status, channel=channel)
        finally:
            await engine.dispose()
        _say(format_report(lines))

    _run(main())


def cmd_migrate(settings: Settings) -> None:
    """Apply the database migrations and exit."""
    _run(migrate(_database_url(settings)))
    log.info("migrations_applied")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clarion", description="Clarion notification platform.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="run the whole system locally (embedded PostgreSQL, one port)")
    up.add_argument("--port", type=int, help="gRPC port (default: CLARION_GRPC_PORT or 50051)")
    up.add_argument("--data-dir", type=Path, help="local state (default: CLARION_DATA_DIR or .clarion)")
    up.add_argument("--http-port", type=int, help="REST and gRPC through Envoy (default: CLARION_HTTP_PORT or 8080)")
    serve = commands.add_parser("serve", help="serve one gRPC service (needs CLARION_DATABASE_URL)")
    serve.add_argument("service", choices=[*app.SERVICES, "all"])
    worker = commands.add_parser("worker", help="run a background worker (needs CLARION_DATABASE_URL)")
    worker.add_argument("kind", choices=list(app.WORKER_KINDS))
    deliveries = commands.add_parser(
        "deliveries", help="recent deliveries, attempts and errors (needs CLARION_DATABASE_URL)"
    )
    deliveries.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    deliveries.add_argument(
        "--status",
        default="",
        choices=["", "queued", "sending", "retrying", "sent", "failed", "skipped", "cancelled"],
        help="only this status",
    )
    deliveries.add_argument("--channel", default="", choices=["", "email", "push"], help="only this channel")
    commands.add_parser("migrate", help="apply database migrations (needs CLARION_DATABASE_URL)")
    kubernetes.add_arguments(
        commands.add_parser("render-gateway", help="write Envoy's Kubernetes config into deploy/k8s/base/gateway")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render-gateway":  # needs no settings
        return kubernetes.run(args)
    overrides: dict[str, object] = {}
    if getattr(args, "port", None) is not None:
        overrides["grpc_port"] = args.port
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "http_port", None) is not None:
        overrides["http_port"] = args.http_port
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        sys.stderr.write(f"clarion: {exc}\n")
        return 2
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    try:
        if args.command == "up":
            cmd_up(settings)
        elif args.command == "serve":
            cmd_serve(settings, args.service)
        elif args.command == "worker":
            cmd_worker(settings, args.kind)
        elif args.command == "deliveries":
            cmd_deliveries(settings, limit=args.limit, status=args.status, channel=args.channel)
        elif args.command == "migrate":
            cmd_migrate(settings)
    except (UsageError, PortInUseError, GatewayError) as exc:
        sys.stderr.write(f"clarion: {exc}\n")
        return 2 if isinstance(exc, UsageError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
