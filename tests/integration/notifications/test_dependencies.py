"""NotificationService when UserService is down: fail fast with UNAVAILABLE and RetryInfo, recover when it is back;
the breaker's state shows in clarion_circuit_breaker_state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from prometheus_client import REGISTRY

from clarion import app
from clarion.core.config import load_settings
from clarion.core.metrics import BREAKER_CLOSED, BREAKER_OPEN
from clarion.core.server import GrpcServer
from clarion.keys.auth import server_auth
from clarion.v1 import templates_pb2, users_pb2
from tests.conftest import free_port
from tests.helpers import status_detail
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_send_notification import send_request
from tests.integration.templates.test_template_service import SEED_TEMPLATE
from tests.integration.users.test_user_service import SEED_USER, rpc_error

pytestmark = pytest.mark.integration


def breaker_state() -> float | None:
    return REGISTRY.get_sample_value("clarion_circuit_breaker_state", {"breaker": "client:UserService"})


async def test_the_breaker_opens_while_users_is_down_and_closes_after(start_clarion: Callable[..., Any]) -> None:
    users_port = free_port()
    clarion: RunningClarion = await start_clarion(
        users_address=f"127.0.0.1:{users_port}",
        breaker_failure_threshold=3,
        breaker_reset_s=1.0,
        dependency_timeout_s=1.0,
    )
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=SEED_TEMPLATE), timeout=10)
    request = send_request(user.user_id)

    for _ in range(3):  # nothing listens on users_port: each call fails and counts against the breaker
        code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
        assert code == grpc.StatusCode.UNAVAILABLE
    started = time.monotonic()
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "circuit open" in status.message
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "DEPENDENCY_UNAVAILABLE"
    assert status_detail(status, error_details_pb2.RetryInfo).retry_delay.ToMilliseconds() <= 1000
    assert time.monotonic() - started < 0.5, "an open breaker answers at once, without calling UserService"
    assert breaker_state() == BREAKER_OPEN

    # UserService comes back on its port (same database): after the reset time the breaker lets calls through.
    users = GrpcServer(
        load_settings(grpc_port=users_port, shutdown_grace_s=0),
        [app.SERVICES["users"](clarion.resources)],
        auth=server_auth(clarion.resources.authenticator),
    )
    await users.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = await clarion.notifications.SendNotification(request, timeout=10)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert response.notification.notification_id
        assert breaker_state() == BREAKER_CLOSED
    finally:
        await users.server.stop(0)
