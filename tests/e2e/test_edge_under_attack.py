"""`clarion up`'s edge attacked from outside without a key: streams held open must not take the API down.

Envoy counts every open stream against its cluster's circuit breaker; with the defaults (1,024 requests), 1,024
anonymous health Watch streams made every later request, `/v1/health` included, a 503 "overflow". Streams now have
their own cluster and limit, Watch is not served at the edge, and each connection may open at most 100 streams.
With keys on, an address calling without a key also has a small bucket of its own, which refuses most of the attack
before it reaches a cluster; with keys off (no per-client buckets) the stream budget alone has to hold.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from clarion.keys.auth import BearerAuth
from clarion.v1 import (
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.conftest import free_port
from tests.e2e.test_gateway_cli import rest, wait_until_rest_serves

pytestmark = pytest.mark.e2e

STREAMS = 2_000
CONNECTIONS = 40
PROBES = 15
# The bound for the calls that must keep working; the median of the probes is held to it, so that one
# probe the scheduler of a busy machine delays does not decide the test.
ANSWER_S = 0.1
# The most anonymous streams one address can have admitted while they are counted: the bucket's 100, and 20 a
# second for the seconds the test waits (ClientLimits' defaults), with room for a slow machine.
ANONYMOUS_ADMITTED = 100 + 20 * 30


@contextlib.asynccontextmanager
async def open_streams(address: str) -> AsyncIterator[list[Any]]:
    """STREAMS anonymous streams over CONNECTIONS connections, half health Watch and half reflection, each held
    open for as long as the edge lets it; closed at the end."""
    # A local subchannel pool per channel: otherwise gRPC shares one TCP connection among equal channels.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS)
    ]
    calls: list[Any] = []
    for n in range(STREAMS):
        channel = channels[n % CONNECTIONS]
        # The stubs' type hints lack the streaming methods.
        health: Any = health_pb2_grpc.HealthStub(channel)
        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        calls.append(health.Watch(health_pb2.HealthCheckRequest()) if n % 2 else reflection.ServerReflectionInfo())
    try:
        yield calls
    finally:
        for call in calls:
            call.cancel()
        await asyncio.gather(*(channel.close() for channel in channels))


async def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


@pytest.mark.parametrize("keys", ["on", "off"])
async def test_two_thousand_anonymous_streams_leave_health_and_sends_answering(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path, keys: str
) -> None:
    http_port = free_port()
    state = tmp_path / "state"
    process = clarion_process(
        "up",
        "--port",
        str(free_port()),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(state),
        env={"CLARION_AUTH_REQUIRED": "true" if keys == "on" else "false"},
    )
    await asyncio.to_thread(wait_until_rest_serves, http_port, process)
    edge = f"127.0.0.1:{http_port}"
    interceptors = [BearerAuth((state / "api-key").read_text().strip())] if keys == "on" else []

    async with grpc.aio.insecure_channel(edge, interceptors=interceptors) as client:
        user = await users_pb2_grpc.UserServiceStub(client).CreateUser(
            users_pb2.CreateUserRequest(user={"email_address": "under-attack@example.com"}), timeout=10
        )
        await templates_pb2_grpc.TemplateServiceStub(client).CreateTemplate(
            templates_pb2.CreateTemplateRequest(template={"template_key": "hello", "subject": "Hi", "body": "Hello"}),
            timeout=10,
        )
        notifications = notifications_pb2_grpc.NotificationServiceStub(client)

        async def send() -> None:
            request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="hello")
            await notifications.SendNotification(request, timeout=5)

        async def health() -> None:
            status, body = await asyncio.to_thread(rest, http_port, "GET", "/v1/health")
            assert (status, body) == (200, {"status": "SERVING"})

        await send()  # warm: connections, caches
        async with open_streams(edge) as streams:
            # Each stream is either held open by the edge or refused by it; give them time to be either.
            await asyncio.sleep(3)
            refused = collections.Counter([await call.code() for call in streams if call.done()])
            held = sum(not call.done() for call in streams)
            health_s = [await timed(health) for _ in range(PROBES)]
            send_s = [await timed(send) for _ in range(PROBES)]
            still_held = sum(not call.done() for call in streams)

    # Watch is not served at the edge; reflection streams beyond their own limit are refused, not queued; with keys
    # on, the address's bucket for calls without a key refuses most of them before either.
    if keys == "on":
        assert set(refused) <= {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED}, refused
        assert refused[grpc.StatusCode.RESOURCE_EXHAUSTED] > STREAMS // 2, refused
        # What the bucket let through (100 at once, 20 a second after) may all have been Watches, refused later.
        assert held == still_held <= ANONYMOUS_ADMITTED, f"the attack held {held} streams, then {still_held}"
    else:
        assert set(refused) <= {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE}, refused
        assert refused[grpc.StatusCode.UNIMPLEMENTED] == STREAMS // 2, refused
        assert 0 < held == still_held < STREAMS, f"the attack held {held} streams, then {still_held}"
    assert statistics.median(health_s) < ANSWER_S, health_s
    assert statistics.median(send_s) < ANSWER_S, send_s
