"""The composition root: which services exist, what they share, and how a process serves some of them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clarion.core.broker import Broker, BrokerUnavailable, create_broker
from clarion.core.cache import Cache, create_cache
from clarion.core.config import Settings, SettingsError
from clarion.core.db import FastPath, create_engine, session_factory
from clarion.core.health_http import start_health_server
from clarion.core.logging import get_logger
from clarion.core.server import GrpcServer, ServiceRegistration, install_stop_signals
from clarion.delivery.breaker import ProviderBreaker
from clarion.delivery.channels import CHANNELS
from clarion.delivery.consumer import DeliveryWorker
from clarion.delivery.failover import Providers
from clarion.delivery.queues import CHANNEL_QUEUES, TOPOLOGY
from clarion.delivery.sweeper import Sweeper
from clarion.inbox import servicer as inbox
from clarion.keys import access
from clarion.keys.auth import Authenticator, BearerAuth, server_auth
from clarion.keys.repository import SqlKeyStore
from clarion.notifications import servicer as notifications
from clarion.notifications.clients import ServiceClients, TemplateRendering, UserLookup
from clarion.notifications.dispatcher import Dispatcher
from clarion.provider_events import servicer as provider_events
from clarion.suppressions import servicer as suppressions
from clarion.templates import servicer as templates
from clarion.templates.isolation import TemplateProcesses
from clarion.users import servicer as users


def service_clients(settings: Settings, *, own_address: str) -> ServiceClients:
    """Clients of UserService and TemplateService (this process's own port unless their addresses are set),
    presenting this workload's service key (CLARION_SERVICE_KEY) when it has one."""
    key = settings.service_key
    return ServiceClients(
        users_address=settings.users_address or own_address,
        templates_address=settings.templates_address or own_address,
        timeout_s=settings.dependency_timeout_s,
        breaker_failure_threshold=settings.breaker_failure_threshold,
        breaker_reset_s=settings.breaker_reset_s,
        interceptors=[BearerAuth(key.get_secret_value())] if key is not None else [],
        max_message_bytes=settings.grpc_max_message_bytes,
    )


def require_service_key(settings: Settings, workload: str) -> None:
    """SettingsError when keys are checked and `workload`, which calls other services over the network, has no
    service key to call them with."""
    if settings.auth_required and settings.service_key is None:
        raise SettingsError(
            f"CLARION_SERVICE_KEY is not set: the {workload} workload calls other Clarion services with it while "
            f"CLARION_AUTH_REQUIRED is true; make one with `clarion keys create-service {workload}`"
        )


@dataclass(frozen=True, slots=True)
class Resources:
    """What the services of one process share: the database pool, the cache, the clients of other services, and
    the API key checker (None when CLARION_AUTH_REQUIRED is false)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    clients: ServiceClients
    authenticator: Authenticator | None
    # The plain asyncpg pool of the hot path (core.db.FastPath), on the same database as `engine`.
    fast: FastPath
    # The worker processes that compile and render Jinja templates (started on first use).
    template_processes: TemplateProcesses

    @classmethod
    def open(
        cls, settings: Settings, database_url: str, *, own_address: str | None = None, serves: bool = True
    ) -> Resources:
        """Pools and clients for a process; `own_address` is where this process serves gRPC, used for the other
        services when their addresses are not set. A process that `serves` checks API keys (unless
        CLARION_AUTH_REQUIRED is false): SettingsError when it has no pepper. A worker serves nothing and needs none.
        """
        authenticate = serves and settings.auth_required
        if serves and not settings.auth_required:
            log.warning("api_keys_disabled", why="CLARION_AUTH_REQUIRED is false: every caller may call every RPC")
        engine = create_engine(database_url, settings=settings)
        sessions = session_factory(engine)
        authenticator = Authenticator.from_settings(SqlKeyStore(sessions), settings) if authenticate else None
        clients = service_clients(settings, own_address=own_address or f"127.0.0.1:{settings.grpc_port}")
        cache = create_cache(settings.redis_url, ttl_s=settings.cache_ttl_s)
        fast = FastPath(database_url, max_size=settings.database_pool_size)
        processes = TemplateProcesses(workers=settings.template_workers)
        return cls(settings, engine, sessions, cache, clients, authenticator, fast, processes)

    async def close(self) -> None:
        await self.clients.close()
        await self.cache.close()
        if self.authenticator is not None:
            await self.authenticator.close()
        await self.fast.close()
        await self.engine.dispose()
        await asyncio.to_thread(self.template_processes.close)


log = get_logger(__name__)

SERVICES: dict[str, Callable[[Resources], ServiceRegistration]] = {
    "users": lambda r: users.registration(sessions=r.sessions, cache=r.cache),
    "templates": lambda r: templates.registration(sessions=r.sessions, cache=r.cache, processes=r.template_processes),
    "notifications": lambda r: notifications.registration(
        fast=r.fast, clients=r.clients, idempotency_ttl_s=r.settings.idempotency_ttl_s
    ),
    "inbox": lambda r: inbox.registration(
        fast=r.fast, authenticator=r.authenticator, users=r.clients, max_watchers=r.settings.inbox_max_watchers
    ),
    "suppressions": lambda r: suppressions.registration(fast=r.fast),
    "provider_events": lambda r: provider_events.registration(fast=r.fast, settings=r.settings),
}
# Services served wherever another is, beside the tables they share: the inbox reads what the notifications'
# deliveries wrote, the accept reads the suppressions, and providers' events move those deliveries on.
SERVED_WITH: dict[str, tuple[str, ...]] = {"notifications": ("inbox", "suppressions", "provider_events")}


# The services with a Deployment of their own (`clarion serve NAME`): the others are served with one of them.
DEPLOYED_SERVICES = tuple(
    name for name in SERVICES if not any(name in companions for companions in SERVED_WITH.values())
)


def with_companions(names: Sequence[str]) -> list[str]:
    """`names` and the services served with them, each once, in order."""
    expanded = [*names, *(companion for name in names for companion in SERVED_WITH.get(name, ()))]
    return list(dict.fromkeys(expanded))


def served(registrations: dict[str, ServiceRegistration]) -> list[ServiceRegistration]:
    """What a server process serves: its services, and AccessService (what the calling key may do), which every
    server answers so that the edge may route it to any of them."""
    return [*registrations.values(), access.registration()]


def wire_in_process(settings: Settings, clients: ServiceClients, registrations: dict[str, ServiceRegistration]) -> None:
    """Services this process serves itself are called in process, unless their address is set explicitly."""
    users_ = registrations.get("users") if settings.users_address is None else None
    templates_ = registrations.get("templates") if settings.templates_address is None else None
    clients.call_in_process(
        users=cast(UserLookup, users_.servicer) if users_ else None,
        templates=cast(TemplateRendering, templates_.servicer) if templates_ else None,
    )


# The dispatcher, one worker per channel (clarion.delivery.channels), the sweeper.
WORKER_KINDS = ("dispatcher", *CHANNELS, "sweeper")
# The workers that call other services (and so need a service key when keys are checked): the dispatcher reads
# users and renders templates, the push worker removes devices FCM no longer knows.
CALLING_WORKERS = ("dispatcher", "push")


async def _while_broker_away(action: Callable[[], Awaitable[None]], stop: asyncio.Event, *, max_delay_s: float) -> bool:
    """Run `action`, again with backoff while the broker is away (down, or restarting just as a worker starts:
    accepts don't need it, committed work waits in PostgreSQL). False when `stop` came first."""
    delay_s = 0.5
    while not stop.is_set():
        try:
            await action()
            return True
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc), retry_in_s=delay_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await stop.wait()
            delay_s = min(delay_s * 2, max_delay_s)
    return False


async def run_workers(
    settings: Settings,
    resources: Resources,
    broker: Broker,
    kinds: Sequence[str],
    *,
    database_url: str,
    stop: asyncio.Event,
) -> None:
    """Run the named background workers until `stop`, then drain: consumers stop taking messages, in-flight ones
    finish (or go back to the queue after CLARION_WORKER_DRAIN_S)."""
    if any(kind != "sweeper" for kind in kinds) and not await _while_broker_away(broker.connect, stop, max_delay_s=30):
        return
    tasks: list[asyncio.Task[None]] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    for kind in kinds:
        if kind == "dispatcher":
            dispatcher = Dispatcher(
                fast=resources.fast,
                clients=resources.clients,
                broker=broker,
                database_url=database_url,
                batch_size=settings.dispatch_batch_size,
                poll_interval_s=settings.dispatch_poll_interval_s,
                task_format=settings.delivery_task_format,
            )
            tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))
        elif kind == "sweeper":
            sweeper = Sweeper(
                fast=resources.fast,
                lease_s=settings.delivery_lease_s,
                republish_after_s=settings.delivery_republish_after_s,
                interval_s=settings.sweeper_interval_s,
            )
            tasks.append(asyncio.create_task(sweeper.run(stop), name="sweeper"))
        else:
            providers = CHANNELS[kind].create_providers(settings, resources.fast)
            closers.extend(provider.close for provider in providers)
            breaker = functools.partial(
                ProviderBreaker,
                threshold=settings.provider_breaker_threshold,
                reset_s=settings.provider_breaker_reset_s,
            )
            worker = DeliveryWorker(
                channel=kind,
                fast=resources.fast,
                providers=Providers([(provider, breaker(name=provider.name)) for provider in providers]),
                clients=resources.clients,
                max_attempts=settings.delivery_max_attempts,
                lease_s=settings.delivery_lease_s,
                backoff_base_s=settings.delivery_backoff_base_s,
            )
            start = functools.partial(worker.start, broker, CHANNEL_QUEUES[kind], prefetch=settings.worker_prefetch)
            if not await _while_broker_away(start, stop, max_delay_s=5):
                break
        log.info("worker_started", kind=kind)
    try:
        await stop.wait()
    finally:
        await broker.stop_consuming(timeout_s=settings.worker_drain_s)
        await asyncio.gather(*tasks, return_exceptions=True)
        for close in closers:
            await close()
        log.info("workers_stopped", kinds=list(kinds))


async def serve(
    settings: Settings,
    names: Sequence[str],
    *,
    database_url: str,
    workers: Sequence[str] = (),
    on_started: Callable[[int], None] | None = None,
    on_metrics: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the named services on one port (and, in local mode, the background workers) until SIGTERM/SIGINT or
    `stop`; then stop taking work, drain, and close."""
    elsewhere = [
        name
        for name, address in (("users", settings.users_address), ("templates", settings.templates_address))
        if address is not None or name not in names
    ]
    if elsewhere and settings.auth_required and set(workers) & set(CALLING_WORKERS):
        # One process has one service key, and the dispatcher's and the push worker's need other scopes.
        raise SettingsError(
            f"local mode runs the workers beside every service and calls {' and '.join(elsewhere)} in process: "
            "unset CLARION_USERS_ADDRESS and CLARION_TEMPLATES_ADDRESS, or run each worker as its own process "
            "(`clarion worker KIND`) with its own service key"
        )
    if elsewhere and "notifications" in names:
        require_service_key(settings, "notifications")
    names = with_companions(names)
    resources = Resources.open(settings, database_url)
    broker = create_broker(
        settings.broker_url,
        topology=TOPOLOGY,
        namespace=settings.broker_namespace,
        publish_timeout_s=settings.broker_publish_timeout_s,
    )
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    background: list[asyncio.Task[None]] = []
    try:
        registrations = {name: SERVICES[name](resources) for name in names}
        wire_in_process(settings, resources.clients, registrations)
        server = GrpcServer(settings, served(registrations), auth=server_auth(resources.authenticator))
        port = await server.start()
        metrics, metrics_port = await start_health_server(
            host=settings.grpc_host, port=settings.metrics_port, check=lambda: not stop.is_set(), stop=stop
        )
        background.append(metrics)
        if on_metrics is not None:
            on_metrics(metrics_port)
        if workers:
            background.append(
                asyncio.create_task(
                    run_workers(settings, resources, broker, workers, database_url=database_url, stop=stop),
                    name="workers",
                )
            )
        if on_started is not None:
            on_started(port)
        try:
            await stop.wait()
        finally:
            for registration in registrations.values():
                if registration.stop is not None:
                    await registration.stop()
            await server.stop()
            await asyncio.gather(*background, return_exceptions=True)
    finally:
        await broker.close()
        await resources.close()


async def run_worker(settings: Settings, kind: str, *, database_url: str, stop: asyncio.Event | None = None) -> None:
    """One worker process (Kubernetes): dispatcher, email, push or sweeper. Runs until SIGTERM/SIGINT."""
    if kind != "sweeper" and not settings.broker_url:
        # The in-memory broker lives in one process: a dispatcher alone would publish where no worker reads.
        raise SettingsError(
            f"CLARION_BROKER_URL is not set: `clarion worker {kind}` is a process of its own and needs the shared "
            "RabbitMQ (amqp://...); only `clarion up` and `clarion serve all` run every worker in one process on "
            "the in-memory broker"
        )
    if kind in CALLING_WORKERS:
        require_service_key(settings, kind)
    resources = Resources.open(settings, database_url, serves=False)
    broker = create_broker(
        settings.broker_url,
        topology=TOPOLOGY,
        namespace=settings.broker_namespace,
        publish_timeout_s=settings.broker_publish_timeout_s,
    )
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    # Alive while the worker runs; a broker outage is not a reason to restart it (it reconnects by itself), but a
    # worker without its broker does no work: not ready until it is connected (the sweeper needs no broker).
    health: asyncio.Task[None] | None = None
    try:
        health, _ = await start_health_server(
            host=settings.grpc_host,
            port=settings.health_port,
            check=lambda: not stop.is_set(),
            stop=stop,
            ready=(lambda: broker.connected) if kind != "sweeper" else None,
        )
        await run_workers(settings, resources, broker, [kind], database_url=database_url, stop=stop)
        await health
    finally:
        if health is not None:
            health.cancel()
        await broker.close()
        await resources.close()
