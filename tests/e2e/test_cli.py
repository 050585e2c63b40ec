"""The `clarion` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import asyncpg
import grpc
import pytest
from alembic.script import ScriptDirectory

from clarion.core.db import alembic_config
from clarion.keys.auth import BearerAuth
from clarion.v1 import (
    common_pb2,
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.conftest import free_port
from tests.e2e.conftest import CLARION, grpcurl, wait_until_serving
from tests.integration.conftest import TEST_PEPPER

pytestmark = pytest.mark.e2e

SERVICES = {
    "clarion.v1.UserService",
    "clarion.v1.TemplateService",
    "clarion.v1.NotificationService",
    "clarion.v1.AccessService",
    "clarion.v1.InboxService",
    "clarion.v1.SuppressionService",
    "clarion.v1.ProviderEventService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


def test_up_serves_every_service_with_health_and_reflection_and_stops_on_sigterm(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = free_port()
    process = clarion_process(
        "up", "--port", str(port), "--http-port", str(free_port()), "--data-dir", str(tmp_path / "state")
    )
    address = f"127.0.0.1:{port}"
    wait_until_serving(address, process)

    listed = grpcurl(address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    health = grpcurl(address, "-d", '{"service": "clarion.v1.NotificationService"}', "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout) == {"status": "SERVING"}
    assert (tmp_path / "state" / "postgres" / "PG_VERSION").exists(), "local mode keeps its database in the data dir"

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Clarion is up" in output
    assert "grpc_server_stopped" in output
    # CLARION_METRICS_PORT=0 (the fixture's): the line shows the port it took, not 0.
    metrics = re.search(r"metrics +http://127\.0\.0\.1:(\d+)/metrics", output)
    assert metrics is not None, output
    assert int(metrics.group(1)) > 0


def test_migrate_applies_migrations_to_a_real_database(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str]
) -> None:
    url = make_database()
    process = clarion_process("migrate", env={"CLARION_DATABASE_URL": url})
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output

    async def version() -> str:
        connection = await asyncpg.connect(url)
        try:
            return str(await connection.fetchval("SELECT version_num FROM alembic_version"))
        finally:
            await connection.close()

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    assert asyncio.run(version()) == head
    again = clarion_process("migrate", env={"CLARION_DATABASE_URL": url})
    assert again.wait(timeout=60) == 0, "migrating twice is a no-op"


def test_serve_refuses_a_port_already_in_use(
    clarion_process: Callable[..., subprocess.Popen[str]], postgres_server_url: str
) -> None:
    port = free_port()
    env = {
        "CLARION_DATABASE_URL": postgres_server_url,
        "CLARION_GRPC_PORT": str(port),
        "CLARION_API_KEY_PEPPER": TEST_PEPPER,
    }
    first = clarion_process("serve", "users", env=env)
    wait_until_serving(f"127.0.0.1:{port}", first)
    second = clarion_process("serve", "templates", env=env)
    output, _ = second.communicate(timeout=30)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in output


def test_up_delivers_end_to_end_in_local_mode(
    clarion_process: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    port = free_port()
    state = tmp_path / "state"
    process = clarion_process("up", "--port", str(port), "--http-port", str(free_port()), "--data-dir", str(state))
    address = f"127.0.0.1:{port}"
    wait_until_serving(address, process)
    api_key = (state / "api-key").read_text().strip()  # the admin key `clarion up` made on first start

    async def scenario() -> notifications_pb2.Notification:
        async with grpc.aio.insecure_channel(address, interceptors=[BearerAuth(api_key)]) as channel:
            users = users_pb2_grpc.UserServiceStub(channel)
            templates = templates_pb2_grpc.TemplateServiceStub(channel)
            notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
            user = await users.CreateUser(
                users_pb2.CreateUserRequest(user={"email_address": "local@example.com"}), timeout=10
            )
            await users.AddDevice(
                users_pb2.AddDeviceRequest(
                    user_id=user.user_id, device={"token": "device-1", "platform": "DEVICE_PLATFORM_WEB"}
                ),
                timeout=10,
            )
            await templates.CreateTemplate(
                templates_pb2.CreateTemplateRequest(
                    template={
                        "template_key": "hello",
                        "subject": "Hi {name}",
                        "body": "Hello {name}",
                        "push_title": "Hi",
                        "push_body": "Hello {name}",
                    }
                ),
                timeout=10,
            )
            request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="hello")
            request.message_data.update({"name": "Ada"})
            sent = await notifications.SendNotification(request, timeout=10)
            get = notifications_pb2.GetNotificationRequest(notification_id=sent.notification.notification_id)
            deadline = time.monotonic() + 30
            while True:
                notification = await notifications.GetNotification(get, timeout=10)
                if notification.status == notifications_pb2.NOTIFICATION_STATUS_SENT:
                    return notification
                assert time.monotonic() < deadline, notification
                await asyncio.sleep(0.2)

    notification = asyncio.run(scenario())
    by_channel = {d.channel: d for d in notification.deliveries}
    assert by_channel[common_pb2.CHANNEL_EMAIL].provider == "file"
    assert by_channel[common_pb2.CHANNEL_PUSH].provider == "simulated"
    eml = state / "outbox" / f"{by_channel[common_pb2.CHANNEL_EMAIL].delivery_id}.eml"
    assert "Subject: Hi Ada" in eml.read_text()


def test_version_is_the_package_version() -> None:
    result = subprocess.run([CLARION, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"clarion {version('clarion')}"
