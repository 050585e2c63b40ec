"""The composition root: which services exist, what they share, and how a process serves some of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clarion.core.cache import Cache, create_cache
from clarion.core.config import Settings
from clarion.core.db import create_engine, session_factory
from clarion.core.server import GrpcServer, ServiceRegistration, install_stop_signals
from clarion.notifications import servicer as notifications
from clarion.notifications.clients import ServiceClients
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


SERVICES: dict[str, Callable[[Resources], ServiceRegistration]] = {
    "users": lambda r: users.registration(sessions=r.sessions, cache=r.cache),
    "templates": lambda r: templates.registration(sessions=r.sessions, cache=r.cache),
    "notifications": lambda r: notifications.registration(
        sessions=r.sessions, clients=r.clients, idempotency_ttl_s=r.settings.idempotency_ttl_s
    ),
}


async def serve(
    settings: Settings,
    names: Sequence[str],
    *,
    database_url: str,
    on_started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the named services on one port until SIGTERM/SIGINT (or `stop`), then drain and close."""
    resources = Resources.open(settings, database_url)
    try:
        server = GrpcServer(settings, [SERVICES[name](resources) for name in names])
        stop = stop or asyncio.Event()
        install_stop_signals(stop)
        port = await server.start()
        if on_started is not None:
            on_started(port)
        try:
            await stop.wait()
        finally:
            await server.stop()
    finally:
        await resources.close()
