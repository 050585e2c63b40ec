"""The gRPC server every Clarion service runs in: health, reflection, the interceptors (errors, API keys), limits,
drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from clarion.core.config import Settings
from clarion.core.interceptors import ServerInterceptor
from clarion.core.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """One gRPC service to serve: its full name (e.g. `clarion.v1.UserService`) and how to add it to a server."""

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]
    # The servicer itself, for callers in the same process (notifications.clients calls it without a transport).
    servicer: object = None
    # Called when the server starts to drain, before it waits for calls to finish: ends the service's long-lived
    # streams (WatchInbox), whose clients resume elsewhere, so that they do not hold the drain for its whole grace.
    stop: Callable[[], Awaitable[None]] | None = None


S = TypeVar("S")


def service_registration(
    servicer: S, add: Callable[[S, grpc.aio.Server], Any], descriptor: ServiceDescriptor
) -> ServiceRegistration:
    """Pair a servicer with its generated `add_XServicer_to_server` function and its proto descriptor."""
    return ServiceRegistration(descriptor.full_name, lambda server: add(servicer, server), servicer)


# The reflection services served: v1alpha by grpcio-reflection, v1 by the same servicer (GrpcServer).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class PortInUseError(RuntimeError):
    """The gRPC port is taken by another process."""


class GrpcServer:
    """A grpc.aio server with the health service, reflection and the interceptors, serving `services`.

    `auth` checks the API key of every call but health and reflection (clarion.keys.auth.server_auth); None serves
    without keys (CLARION_AUTH_REQUIRED=false), which every caller has to say explicitly.
    """

    def __init__(
        self, settings: Settings, services: Sequence[ServiceRegistration], *, auth: grpc.aio.ServerInterceptor | None
    ) -> None:
        self._settings = settings
        self._services = list(services)
        keepalive_ms = int(settings.grpc_keepalive_time_s * 1000)
        # The first interceptor is the outermost: the key check runs inside the one that maps errors to statuses.
        interceptors: list[grpc.aio.ServerInterceptor] = [ServerInterceptor()]
        if auth is not None:
            interceptors.append(auth)
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # Off, so that a second server on the same port fails to start instead of silently sharing it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
                ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
                ("grpc.keepalive_time_ms", keepalive_ms),
                ("grpc.keepalive_timeout_ms", int(settings.grpc_keepalive_timeout_s * 1000)),
                ("grpc.http2.min_ping_interval_without_data_ms", min(keepalive_ms, 10_000)),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for service in self._services:
            service.add_to_server(self.server)
        names = [s.name for s in self._services]
        reflecting = reflection.aio.ReflectionServicer([*names, health.SERVICE_NAME, reflection.SERVICE_NAME])
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflecting, self.server)  # type: ignore[no-untyped-call]
        # grpcio-reflection serves only v1alpha, and current clients (grpcurl, Postman) ask v1 first, falling back
        # only on UNIMPLEMENTED (through Envoy they would wait for a timeout instead). v1's messages are v1alpha's
        # under another package, field for field, so the same servicer answers both.
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    REFLECTION_V1,
                    {
                        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                            reflecting.ServerReflectionInfo,
                            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start; returns the bound port (useful when the setting is 0)."""
        address = f"{self._settings.grpc_host}:{self._settings.grpc_port}"
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise PortInUseError(f"cannot listen on {address}: is another server using it?") from exc
        await self.server.start()
        # "" is the whole server; each service name is registered so Kubernetes gRPC probes can ask for it.
        for name in ["", *(s.name for s in self._services)]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "grpc_server_started",
            address=f"{self._settings.grpc_host}:{self.port}",
            services=[s.name for s in self._services],
        )
        return self.port

    async def stop(self) -> None:
        """Drain: report NOT_SERVING, refuse new calls, let in-flight calls finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        log.info("grpc_server_draining", grace_s=self._settings.shutdown_grace_s)
        await self.server.stop(self._settings.shutdown_grace_s)
        log.info("grpc_server_stopped")


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM (Kubernetes) and SIGINT (Ctrl-C) set `stop` instead of killing the process mid-call."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
