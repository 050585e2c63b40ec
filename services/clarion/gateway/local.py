"""Local mode's edge: Envoy on CLARION_HTTP_HOST:CLARION_HTTP_PORT in front of the local gRPC server.

The rendered files live in the data dir (`.clarion/envoy.yaml`, `.clarion/gateway.binpb`), so what Envoy runs can
be read, and checked with `envoy --mode validate -c .clarion/envoy.yaml`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from clarion.core.config import Settings
from clarion.gateway.config import local_gateway_config, write_gateway_files
from clarion.gateway.descriptors import default_descriptor_set_path, load_descriptor_set, service_names
from clarion.gateway.errors import GatewayError
from clarion.gateway.process import EnvoyProcess, ensure_port_free, run_envoy

# How local mode runs the gRPC server: `serve(on_started, stop)` serves until `stop` is set (or a signal sets it),
# calling `on_started(port)` once it listens.
Serve = Callable[[Callable[[int], None], asyncio.Event], Awaitable[None]]

CONFIG_FILE = "envoy.yaml"
DESCRIPTOR_FILE = "gateway.binpb"
# Envoy at info logs dozens of start-up lines; a Clarion at info wants to hear only of Envoy's problems.
_ENVOY_LOG_LEVEL = {"debug": "info", "info": "warning", "warning": "warning", "error": "error"}


def check_http_port(settings: Settings) -> None:
    """Fail fast, naming CLARION_HTTP_PORT, if the REST port is taken."""
    ensure_port_free(settings.http_host, settings.http_port, setting="CLARION_HTTP_PORT")


def write_local_gateway(settings: Settings, *, grpc_port: int) -> Path:
    """Render Envoy's config for the local server on `grpc_port` into the data dir; return the config's path."""
    data_dir = settings.data_dir.resolve()
    source = default_descriptor_set_path()
    config = local_gateway_config(
        listen_host=settings.http_host,
        listen_port=settings.http_port,
        grpc_host=settings.grpc_host,
        grpc_port=grpc_port,
        # The local server runs every service the contracts define.
        services=service_names(load_descriptor_set(source)),
        descriptor_path=data_dir / DESCRIPTOR_FILE,
        client_limits=settings.auth_required,
    )
    return write_gateway_files(config, config_path=data_dir / CONFIG_FILE, source_descriptor_set=source)


@contextlib.asynccontextmanager
async def local_gateway(settings: Settings, *, grpc_port: int) -> AsyncIterator[EnvoyProcess]:
    """Envoy, ready, in front of the gRPC server on `grpc_port` for the duration of the block; stopped after."""
    config_path = await asyncio.to_thread(write_local_gateway, settings, grpc_port=grpc_port)
    async with run_envoy(
        config_path, run_dir=config_path.parent, log_level=_ENVOY_LOG_LEVEL[settings.log_level]
    ) as envoy:
        yield envoy


async def serve_behind_gateway(settings: Settings, serve: Serve, *, on_ready: Callable[[int], None]) -> None:
    """Run the gRPC server with Envoy in front of it; `on_ready(grpc_port)` once both are up.

    Envoy starts once the server listens and stops after the server has drained, so a REST call in flight at
    SIGTERM still has its proxy while the server finishes it. If Envoy exits on its own, everything stops and
    GatewayError says why.
    """
    stop = asyncio.Event()
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.ensure_future(serve(listening.set_result, stop))
    try:
        first: set[asyncio.Future[Any]] = {server, listening}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            return  # the server ended before it listened; awaiting it below raises its error
        grpc_port = listening.result()
        async with local_gateway(settings, grpc_port=grpc_port) as envoy:
            on_ready(grpc_port)
            envoy_exited = asyncio.ensure_future(envoy.wait())
            try:
                await asyncio.wait({server, envoy_exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                envoy_exited.cancel()
            if not server.done():
                raise GatewayError(envoy.unexpected_exit_message())
    finally:
        stop.set()
        await server
