"""The composition root: which services exist, what they share, and how a process serves some of them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clarion.core.broker import Broker, BrokerUnavailable, create_broker
from clarion.core.cache import Cache, create_cache
from clarion.core.config import Settings
from clarion.core.db import create_engine, session_factory
from clarion.core.logging import get_logger
from clarion.core.server import GrpcServer, ServiceRegistration, install_stop_signals
from clarion.notifications import servicer as notifications
from clarion.notifications.clients import ServiceClients
from clarion.notifications.dispatcher import Dispatcher
from clarion.templates import servicer as templates
from clarion.users import servicer as users


@dataclass(frozen=True, slots=True)
class Resources:
    """What the services of one process share: the database pool, the cache, the clients of other services."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: Cache
    clients: ServiceClients

    @classmethod
    def open(cls, settings: Settings, database_url: str, *, own_address: str | None = None) -> Resources:
        """Pools and clients for a process; `own_address` is where this process serves gRPC, used for the other
        services when their addresses are not set."""
        engine = create_engine(database_url, settings=settings)
        own = own_address or f"127.0.0.1:{settings.grpc_port}"
        clients = ServiceClients(
            users_address=settings.users_address or own,
            templates_address=settings.templates_address or own,
            timeout_s=settings.dependency_timeout_s,
            breaker_failure_threshold=settings.breaker_failure_threshold,
            breaker_reset_s=settings.breaker_reset_s,
        )
        cache = create_cache(settings.redis_url, ttl_s=settings.cache_ttl_s)
        return cls(settings, engine, session_factory(engine), cache, clients)

    async def close(self) -> None:
        await self.clients.close()
        await self.cache.close()
        await self.engine.dispose()


log = get_logger(__name__)

SERVICES: dict[str, Callable[[Resources], ServiceRegistration]] = {
    "users": lambda r: users.registration(sessions=r.sessions, cache=r.cache),
    "templates": lambda r: templates.registration(sessions=r.sessions, cache=r.cache),
    "notifications": lambda r: notifications.registration(
        sessions=r.sessions, clients=r.clients, idempotency_ttl_s=r.settings.idempotency_ttl_s
    ),
}


async def run_dispatcher(
    settings: Settings, resources: Resources, broker: Broker, *, database_url: str, stop: asyncio.Event
) -> None:
    """The dispatcher until `stop`. The broker may be down at start (accepts don't need it): keep trying to connect;
    committed deliveries wait in PostgreSQL meanwhile."""
    delay_s = 0.5
    while not stop.is_set():
        try:
            await broker.connect()
            break
        except BrokerUnavailable as exc:
            log.warning("broker_unavailable", error=str(exc), retry_in_s=delay_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await stop.wait()
            delay_s = min(delay_s * 2, 30.0)
    dispatcher = Dispatcher(
        sessions=resources.sessions,
        clients=resources.clients,
        broker=broker,
        database_url=database_url,
        batch_size=settings.dispatch_batch_size,
        poll_interval_s=settings.dispatch_poll_interval_s,
    )
    log.info("dispatcher_started")
    await dispatcher.run(stop)
    log.info("dispatcher_stopped")


async def serve(
    settings: Settings,
    names: Sequence[str],
    *,
    database_url: str,
    with_dispatcher: bool = False,
    on_started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the named services on one port (and, in local mode, run the dispatcher) until SIGTERM/SIGINT or
    `stop`; then stop taking work, drain, and close."""
    resources = Resources.open(settings, database_url)
    broker = create_broker(settings.broker_url, publish_timeout_s=settings.broker_publish_timeout_s)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    background: list[asyncio.Task[None]] = []
    try:
        server = GrpcServer(settings, [SERVICES[name](resources) for name in names])
        port = await server.start()
        if with_dispatcher:
            background.append(
                asyncio.create_task(
                    run_dispatcher(settings, resources, broker, database_url=database_url, stop=stop),
                    name="dispatcher",
                )
            )
        if on_started is not None:
            on_started(port)
        try:
            await stop.wait()
        finally:
            await server.stop()
            await asyncio.gather(*background, return_exceptions=True)
    finally:
        await broker.close()
        await resources.close()


async def run_worker(settings: Settings, kind: str, *, database_url: str, stop: asyncio.Event | None = None) -> None:
    """A worker process (Kubernetes): `dispatcher` for now. Runs until SIGTERM/SIGINT."""
    resources = Resources.open(settings, database_url)
    broker = create_broker(settings.broker_url, publish_timeout_s=settings.broker_publish_timeout_s)
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    try:
        if kind == "dispatcher":
            await run_dispatcher(settings, resources, broker, database_url=database_url, stop=stop)
    finally:
        await broker.close()
        await resources.close()
