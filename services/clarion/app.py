"""The composition root: which services exist, and how a process serves some of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from clarion.core.config import Settings
from clarion.core.server import GrpcServer, ServiceRegistration, install_stop_signals
from clarion.notifications import servicer as notifications
from clarion.templates import servicer as templates
from clarion.users import servicer as users

SERVICES: dict[str, Callable[[], ServiceRegistration]] = {
    "users": users.registration,
    "templates": templates.registration,
    "notifications": notifications.registration,
}


async def serve(
    settings: Settings,
    names: Sequence[str],
    *,
    on_started: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the named services on one port until SIGTERM/SIGINT (or `stop`), then drain."""
    server = GrpcServer(settings, [SERVICES[name]() for name in names])
    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    port = await server.start()
    if on_started is not None:
        on_started(port)
    try:
        await stop.wait()
    finally:
        await server.stop()
