"""The `clarion` command: `up` (everything locally), `serve` (one service, for Kubernetes), `migrate`, `keys`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion import app
from clarion.core.config import Settings, SettingsError, load_settings
from clarion.core.db import create_engine, database_location, is_database_unavailable, migrate, session_factory
from clarion.core.embedded_postgres import EmbeddedPostgresInUse
from clarion.core.errors import ClarionError
from clarion.core.logging import configure_logging, get_logger
from clarion.core.server import PortInUseError
from clarion.core.tracing import configure_tracing
from clarion.delivery.channels import CHANNELS
from clarion.delivery.lifecycle import DeliveryStatus
from clarion.gateway import kubernetes
from clarion.gateway.config import console_source
from clarion.gateway.errors import GatewayError
from clarion.keys.models import ApiKeyRow
from clarion.keys.scopes import DEFAULT_PROJECT, SERVICE_KEY_SCOPES, Scope
from clarion.keys.tokens import local_pepper, require_pepper

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

        return start_embedded_postgres(settings.data_dir, exclusive=False)  # beside a running `clarion up`, too
    return _database_url(settings)


def _with_local_pepper(settings: Settings, *, create: bool) -> Settings:
    """The settings with CLARION_API_KEY_PEPPER filled from <data_dir>/api-key-pepper when it is unset."""
    if settings.api_key_pepper is not None or not settings.auth_required:
        return settings
    pepper = local_pepper(settings.data_dir, create=create)
    return settings if pepper is None else settings.model_copy(update={"api_key_pepper": pepper})


async def _local_key(settings: Settings, database_url: str) -> tuple[str, bool]:
    from clarion.keys.manage import ensure_local_key

    engine = create_engine(database_url, settings=settings)
    try:
        return await ensure_local_key(
            session_factory(engine), pepper=require_pepper(settings), data_dir=settings.data_dir
        )
    finally:
        await engine.dispose()


def cmd_up(settings: Settings) -> None:
    """Local mode: embedded PostgreSQL unless CLARION_DATABASE_URL is set, migrations, an admin API key on first
    start, every service on one port, and Envoy in front of it serving REST and gRPC on CLARION_HTTP_PORT."""
    from clarion.core.embedded_postgres import start_embedded_postgres
    from clarion.gateway.local import check_http_port, serve_behind_gateway

    check_http_port(settings)
    settings = _with_local_pepper(settings, create=True)
    database_url = settings.database_url or start_embedded_postgres(settings.data_dir)

    database = "CLARION_DATABASE_URL" if settings.database_url else f"embedded PostgreSQL in {settings.data_dir}"
    key_line = "  API keys  off (CLARION_AUTH_REQUIRED=false)\n"
    metrics_port = settings.metrics_port

    def metrics_started(port: int) -> None:
        nonlocal metrics_port
        metrics_port = port  # the one bound, when the setting is 0

    def started(port: int) -> None:
        address = f"{settings.grpc_host}:{port}"
        edge = f"{settings.http_host}:{settings.http_port}"
        console = f"  console   http://{edge}/console/   (paste the API key below)\n" if console_source() else ""
        _say(
            "\nClarion is up (local mode).\n"
            f"{console}"
            f"  REST      http://{edge}   try: curl http://{edge}/v1/health\n"
            f"  gRPC      {address}   try: grpcurl -plaintext {address} list   (also on {edge}, through Envoy)\n"
            f"  database  {database}\n"
            f"  metrics   http://{settings.grpc_host}:{metrics_port}/metrics\n"
            f"{key_line}"
            "Press Ctrl-C to stop.\n"
        )

    async def main() -> None:
        nonlocal key_line
        await migrate(database_url)
        if settings.auth_required:
            key_file = settings.data_dir / "api-key"
            token, created = await _local_key(settings, database_url)
            shown = (
                f"{token}   (new admin key, saved in {key_file}; shown only this once)"
                if created
                else (f"in {key_file}")
            )
            key_line = (
                f"  API key   {shown}\n"
                f'            try: curl -H "authorization: Bearer $(cat {key_file})" http://{settings.http_host}:'
                f"{settings.http_port}/v1/users\n"
            )
        await serve_behind_gateway(
            settings,
            lambda on_started, stop: app.serve(
                settings,
                list(app.SERVICES),
                database_url=database_url,
                workers=app.WORKER_KINDS,
                on_started=on_started,
                on_metrics=metrics_started,
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


def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> None:
    """Print recent deliveries with their attempts and last error, or (--stats) the statistics of a window."""
    from clarion.core.db import FastPath
    from clarion.delivery import store
    from clarion.delivery.report import format_report, report_json
    from clarion.notifications.stats import format_stats, stats_json

    if args.stats and args.status:
        raise UsageError("--status does not apply to --stats: the statistics count every status")
    if not args.stats and args.provider:
        raise UsageError("--provider applies to --stats only")
    if args.hours <= 0 or args.hours > 366 * 24:
        raise UsageError("--hours must be more than 0 and at most 8784 (366 days)")
    database_url = _local_or_configured_database(settings)

    async def main() -> None:
        fast = FastPath(database_url, max_size=1)
        try:
            async with fast.connection() as connection:
                if args.stats:
                    end = datetime.now(UTC)
                    stats = await store.delivery_stats(
                        connection,
                        start=end - timedelta(hours=args.hours),
                        end=end,
                        channel=args.channel,
                        provider=args.provider,
                        project=None,  # an operator's view, of every project
                    )
                    report = stats_json(stats) if args.json else format_stats(stats)
                else:
                    lines = await store.recent_deliveries(
                        connection, limit=args.limit, status=args.status, channel=args.channel
                    )
                    report = report_json(lines) if args.json else format_report(lines)
        finally:
            await fast.close()
        _say(report)

    _run(main())


def cmd_keys(settings: Settings, args: argparse.Namespace) -> None:
    """`clarion keys create|create-service|list|revoke|create-project|projects` on CLARION_DATABASE_URL, or on
    local mode's embedded database (migrated first) with the pepper in the data dir."""
    local = settings.database_url is None
    database_url = _local_or_configured_database(settings)
    settings = _with_local_pepper(settings, create=local)

    async def main() -> None:
        if local:
            await migrate(database_url)
        engine = create_engine(database_url, settings=settings)
        sessions = session_factory(engine)
        try:
            await _keys_action(settings, args, sessions)
        except ProgrammingError as exc:
            if "api_keys" not in str(exc):
                raise
            raise UsageError("this database has no api_keys table yet: run `clarion migrate` first") from None
        finally:
            await engine.dispose()

    _run(main())


async def _keys_action(
    settings: Settings, args: argparse.Namespace, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from clarion.keys.manage import (
        create_key,
        create_project,
        create_service_key,
        list_keys,
        list_projects,
        revoke_key,
    )

    if args.action == "create":
        issued = await create_key(
            sessions, pepper=require_pepper(settings), name=args.name, scopes=args.scope, project_id=args.project
        )
        # The key alone on stdout, so `KEY=$(clarion keys create ...)` works; the note for people on stderr.
        _say(issued.token)
        _note(
            f"API key {issued.row.id} ({issued.row.name!r}, scopes {', '.join(issued.row.scopes)}, project "
            f"{issued.row.project_id}) created. Store it now: it is not shown again and cannot be recovered."
        )
    elif args.action == "create-service":
        issued = await create_service_key(sessions, pepper=require_pepper(settings), workload=args.workload)
        _say(issued.token)
        _note(
            f"service key {issued.row.id} (scopes {', '.join(issued.row.scopes)}) created: give it to the "
            f"{args.workload} workload as CLARION_SERVICE_KEY. It is not shown again; the edge refuses it."
        )
    elif args.action == "list":
        rows = await list_keys(sessions)
        _say(keys_json(rows) if args.json else format_keys(rows))
    elif args.action == "create-project":
        project = await create_project(sessions, project_id=args.project_id, name=args.name or "")
        _note(f"project {project.id} ({project.name!r}) created; give it keys with --project {project.id}")
    elif args.action == "projects":
        projects = await list_projects(sessions)
        if args.json:
            _say(json.dumps([{"id": row.id, "name": row.name} for row in projects], indent=2))
        else:
            _say("\n".join(f"{row.id}  {row.name}" for row in projects))
    else:
        row = await revoke_key(sessions, args.key_id)
        _note(
            f"API key {row.id} ({row.name!r}) is revoked; servers refuse it within "
            f"{settings.api_key_cache_ttl_s:g} s (CLARION_API_KEY_CACHE_TTL_S)."
        )


def _note(text: str) -> None:
    sys.stderr.write(text + "\n")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def format_keys(rows: Sequence[ApiKeyRow]) -> str:
    """`clarion keys list` as an aligned table (never a secret: the table holds only keyed hashes)."""
    table = [["ID", "NAME", "PROJECT", "SCOPES", "CREATED", "LAST USED", "REVOKED"]]
    for row in rows:
        scopes = ",".join(row.scopes)
        times = [_when(row.created_at), _when(row.last_used_at), _when(row.revoked_at)]
        table.append([row.id, row.name, row.project_id, scopes, *times])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in table
    )


def keys_json(rows: Sequence[ApiKeyRow]) -> str:
    """`clarion keys list --json`: the table's columns, times in ISO 8601 UTC or null."""
    return json.dumps(
        [
            {
                "id": row.id,
                "name": row.name,
                "project": row.project_id,
                "scopes": list(row.scopes),
                "created": _when(row.created_at),
                "last_used": _when(row.last_used_at) if row.last_used_at else None,
                "revoked": _when(row.revoked_at) if row.revoked_at else None,
            }
            for row in rows
        ],
        indent=2,
    )


def cmd_migrate(settings: Settings) -> None:
    """Apply the database migrations and exit."""
    _run(migrate(_database_url(settings), app_role=settings.database_app_role))
    log.info("migrations_applied", app_role=settings.database_app_role)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clarion", description="Clarion notification platform.")
    parser.add_argument("--version", action="version", version=f"clarion {version('clarion')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="run the whole system locally (embedded PostgreSQL, one port)")
    up.add_argument("--port", type=int, help="gRPC port (default: CLARION_GRPC_PORT or 50051)")
    up.add_argument("--data-dir", type=Path, help="local state (default: CLARION_DATA_DIR or .clarion)")
    up.add_argument("--http-port", type=int, help="REST and gRPC through Envoy (default: CLARION_HTTP_PORT or 8080)")
    up.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics (default: CLARION_METRICS_PORT or 9464; 0: a free one)"
    )
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
        choices=["", *(status.value for status in DeliveryStatus)],
        help="only this status",
    )
    deliveries.add_argument("--channel", default="", choices=["", *CHANNELS], help="only this channel")
    deliveries.add_argument(
        "--stats", action="store_true", help="counts by status, channel and provider, success rate, time to send"
    )
    deliveries.add_argument("--hours", type=float, default=24, help="--stats: the window, in hours (default 24)")
    deliveries.add_argument("--provider", default="", help="--stats: only this provider (sendgrid, smtp, fcm...)")
    deliveries.add_argument("--json", action="store_true", help="print JSON instead of a table, for scripts")
    commands.add_parser("migrate", help="apply database migrations (needs CLARION_DATABASE_URL)")
    kubernetes.add_arguments(
        commands.add_parser("render-gateway", help="write Envoy's Kubernetes config into deploy/k8s/base/gateway")
    )
    keys = commands.add_parser(
        "keys", help="create, list and revoke API keys and projects (CLARION_DATABASE_URL, or local mode's database)"
    )
    # --data-dir after the action (`clarion keys list --data-dir D`), where people type it.
    local = argparse.ArgumentParser(add_help=False)
    local.add_argument("--data-dir", type=Path, help="local mode's state (default: CLARION_DATA_DIR or .clarion)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[local], help="create a key and print it, once")
    create.add_argument("--name", required=True, help="who or what the key is for, e.g. billing-service")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        help="repeat for several: notifications:send (send and read notifications, dead letters), "
        "manage (users and templates), users:get, templates:render, devices:remove (parts of manage), "
        "read (read users, templates and the project's notifications, change nothing: the console's read-only key), "
        "projects:read_all (read every project's notifications), admin (everything)",
    )
    create.add_argument(
        "--project", default=DEFAULT_PROJECT, help="the project the key acts in (default: default); see create-project"
    )
    service = actions.add_parser(
        "create-service",
        parents=[local],
        help="create the key one of Clarion's workloads calls the others with (only the scopes it needs)",
    )
    service.add_argument("workload", choices=list(SERVICE_KEY_SCOPES), help="the workload that will present it")
    new_project = actions.add_parser(
        "create-project", parents=[local], help="create a project: its keys see only its notifications"
    )
    new_project.add_argument("project_id", metavar="ID", help="a slug: lowercase letters, digits and '-'")
    new_project.add_argument("--name", help="a label for people (default: the id)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of a table, for scripts")
    actions.add_parser("projects", parents=[local, as_json], help="every project: id and name")
    actions.add_parser(
        "list",
        parents=[local, as_json],
        help="every key: id, name, scopes, created, last used, revoked (never the secret)",
    )
    revoke = actions.add_parser("revoke", parents=[local], help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="ID")
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
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        sys.stderr.write(f"clarion: {exc}\n")
        return 2
    # `keys` and `deliveries` print a key or a table on stdout: their logs go to stderr, so they never mix, and only
    # from warnings up unless debug is asked for (starting the embedded database and migrating are not news there).
    quiet = args.command in ("keys", "deliveries")
    configure_logging(
        level="warning" if quiet and settings.log_level == "info" else settings.log_level,
        fmt=settings.log_format,
        stream=sys.stderr if quiet else None,
    )
    if args.command in ("up", "serve", "worker"):
        # One service name per kind of process, so a trace shows which process each span ran in.
        role = {"up": "local", "serve": getattr(args, "service", ""), "worker": getattr(args, "kind", "")}
        configure_tracing(settings, service_name=f"clarion-{role[args.command]}")
    try:
        if args.command == "up":
            cmd_up(settings)
        elif args.command == "serve":
            cmd_serve(settings, args.service)
        elif args.command == "worker":
            cmd_worker(settings, args.kind)
        elif args.command == "deliveries":
            cmd_deliveries(settings, args)
        elif args.command == "migrate":
            cmd_migrate(settings)
        elif args.command == "keys":
            cmd_keys(settings, args)
    except (UsageError, SettingsError, PortInUseError, GatewayError, ClarionError, EmbeddedPostgresInUse) as exc:
        sys.stderr.write(f"clarion: {exc}\n")
        return 2 if isinstance(exc, UsageError | SettingsError) else 1
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        # One line, not a driver's traceback: the operator's question is only "which database, and why not".
        where = database_location(settings.database_url or "")
        sys.stderr.write(
            f"clarion: cannot reach PostgreSQL{f' at {where}' if where else ''} ({_root_cause(exc)}): is it running, "
            "and is CLARION_DATABASE_URL right?\n"
        )
        return 1
    return 0


def _root_cause(error: BaseException) -> str:
    """The innermost cause of a chain of errors, as `Type: message`."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
