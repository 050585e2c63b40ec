"""Keys and database roles between processes, as Kubernetes runs them: the servers verify keys (they hold the
pepper); the dispatcher and the email worker hold no pepper; the dispatcher and NotificationService call the other
services with keys of their own made by `clarion keys create-service`, which carry only what their calls need; and
every process but `clarion migrate` connects as a role that may change data, never the schema."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

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
from tests.e2e.conftest import wait_until_serving
from tests.e2e.test_workers_as_processes import _cleanup, _wait_settled
from tests.integration.conftest import RABBITMQ_URL
from tests.integration.delivery.fake_http import FakeHttpServer
from tests.integration.delivery.fake_sendgrid import FakeSendGrid

pytestmark = pytest.mark.e2e

CLARION = str(Path(sys.executable).parent / "clarion")
PEPPER = "e2e-service-keys-pepper-0123456789abcdefghijkl"
SENDGRID_KEY = "SG.e2e-service-keys"


def clarion(*args: str, env: dict[str, str]) -> str:
    """`clarion ARGS` with `env`: what it prints."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")} | env
    done = subprocess.run([CLARION, *args], env=environment, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def keys(database_url: str, *args: str) -> str:
    """`clarion keys ARGS` on the test database: the key it prints."""
    return clarion("keys", *args, env={"CLARION_DATABASE_URL": database_url, "CLARION_API_KEY_PEPPER": PEPPER})


@contextlib.asynccontextmanager
async def data_only_role(owner_url: str) -> AsyncIterator[str]:
    """A new login role, granted data access by `clarion migrate` as the owner: the URL to connect as it."""
    role = f"clarion_app_{uuid.uuid4().hex[:8]}"
    owner = await asyncpg.connect(owner_url)
    try:
        await owner.execute(f"CREATE ROLE {role} LOGIN")
        env = {"CLARION_DATABASE_URL": owner_url, "CLARION_DATABASE_APP_ROLE": role, "CLARION_LOG_LEVEL": "warning"}
        await asyncio.to_thread(clarion, "migrate", env=env)
        parts = urlsplit(owner_url)
        yield urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    finally:
        await owner.execute(f"DROP OWNED BY {role}")
        await owner.execute(f"DROP ROLE {role}")
        await owner.close()


async def test_the_services_role_changes_data_never_the_schema(make_database: Callable[..., str]) -> None:
    owner_url = await asyncio.to_thread(make_database, migrated=True)
    async with data_only_role(owner_url) as app_url:
        app = await asyncpg.connect(app_url)
        try:
            assert await app.fetchval("SELECT count(*) FROM users") == 0
            await app.execute("INSERT INTO projects (id, name, created_at) VALUES ('p', 'p', now())")
            assert await app.execute("DELETE FROM projects WHERE id = 'p'") == "DELETE 1"
            for ddl in (
                "CREATE TABLE mine (id int)",
                "DROP TABLE users",
                "ALTER TABLE users ADD COLUMN x int",
                "TRUNCATE notifications",
                "DELETE FROM alembic_version",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(ddl)
        finally:
            await app.close()


async def send_one(address: str, admin: str) -> str:
    async with grpc.aio.insecure_channel(address, interceptors=[BearerAuth(admin)]) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        templates = templates_pb2_grpc.TemplateServiceStub(channel)
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        template = {"template_key": "svc", "subject": "Hi {n}", "body": "#{n}"}
        await templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
        user = await users.CreateUser(
            users_pb2.CreateUserRequest(user={"email_address": "svc@example.com"}), timeout=10
        )
        request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="svc")
        request.message_data.update({"n": "1"})
        # Scheduled, so the dispatcher (not the accept path) renders it: with its own key, in its own process.
        request.send_at.FromSeconds(int(time.time()) + 1)
        sent = await notifications.SendNotification(request, timeout=10)
        settled = await _wait_settled(notifications, sent.notification.notification_id)
        return str(notifications_pb2.NotificationStatus.Name(settled.status))


async def test_workers_call_with_service_keys_hold_no_pepper_and_no_ddl_right(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str]
) -> None:
    owner_url = await asyncio.to_thread(make_database, migrated=True)
    async with data_only_role(owner_url) as database_url:
        await _run_as_kubernetes_does(clarion_process, database_url)


async def _run_as_kubernetes_does(clarion_process: Callable[..., subprocess.Popen[str]], database_url: str) -> None:
    admin = await asyncio.to_thread(keys, database_url, "create", "--name", "e2e", "--scope", "admin")
    for_server = await asyncio.to_thread(keys, database_url, "create-service", "notifications")
    for_dispatcher = await asyncio.to_thread(keys, database_url, "create-service", "dispatcher")
    assert for_dispatcher.startswith("clr_svc-dispatcher-")
    namespace, port = f"e2e-{uuid.uuid4().hex[:8]}", free_port()
    address = f"127.0.0.1:{port}"
    common = {
        "CLARION_DATABASE_URL": database_url,
        "CLARION_BROKER_URL": RABBITMQ_URL,
        "CLARION_BROKER_NAMESPACE": namespace,
        "CLARION_GRPC_PORT": str(port),
        "CLARION_USERS_ADDRESS": address,
        "CLARION_TEMPLATES_ADDRESS": address,
        "CLARION_HEALTH_PORT": "0",
        "CLARION_LOG_LEVEL": "warning",
    }
    # A worker that calls other services and has no key says so at once, naming the variable and the command.
    keyless = clarion_process("worker", "dispatcher", env=common)
    assert await asyncio.to_thread(keyless.wait, 60) == 2
    assert keyless.stdout is not None
    said = keyless.stdout.read()
    assert "CLARION_SERVICE_KEY" in said
    assert "clarion keys create-service dispatcher" in said
    with FakeHttpServer() as http:
        sendgrid = FakeSendGrid(http, api_key=SENDGRID_KEY)
        server = clarion_process(
            "serve", "all", env={**common, "CLARION_API_KEY_PEPPER": PEPPER, "CLARION_SERVICE_KEY": for_server}
        )
        await asyncio.to_thread(wait_until_serving, address, server)
        workers = [
            clarion_process("worker", "dispatcher", env={**common, "CLARION_SERVICE_KEY": for_dispatcher}),
            clarion_process(
                "worker",
                "email",
                env={**common, "CLARION_SENDGRID_API_KEY": SENDGRID_KEY, "CLARION_SENDGRID_HOST": sendgrid.host},
            ),
        ]
        try:
            assert await send_one(address, admin) == "NOTIFICATION_STATUS_SENT"
            assert [request.json()["subject"] for request in sendgrid.requests] == ["Hi 1"]
            assert all(worker.poll() is None for worker in workers), "no worker needed a pepper"
        finally:
            await _cleanup(namespace, [*workers, server])


@pytest.mark.parametrize(
    ("role", "said"), [("postgres", "is the role migrations run as"), ("no_such_role_x", "no such role")]
)
def test_migrate_refuses_an_app_role_it_cannot_grant(make_database: Callable[..., str], role: str, said: str) -> None:
    database_url = make_database(migrated=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    environment |= {"CLARION_DATABASE_URL": database_url, "CLARION_DATABASE_APP_ROLE": role}
    done = subprocess.run([CLARION, "migrate"], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr + done.stdout


@pytest.mark.parametrize("kind", ["dispatcher", "email", "push"])
def test_a_worker_process_without_a_broker_url_says_so(make_database: Callable[..., str], kind: str) -> None:
    # Alone, on the in-memory broker, a dispatcher would publish where no worker reads (and a worker read nothing).
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    environment |= {"CLARION_DATABASE_URL": make_database(migrated=True), "CLARION_AUTH_REQUIRED": "false"}
    done = subprocess.run([CLARION, "worker", kind], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "CLARION_BROKER_URL is not set" in done.stderr


@pytest.mark.parametrize("command", [["migrate"], ["keys", "list"], ["deliveries"]])
def test_an_unreachable_database_is_one_line_not_a_traceback(command: list[str]) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    environment["CLARION_DATABASE_URL"] = f"postgresql://clarion:s3cret@127.0.0.1:{free_port()}/clarion"
    done = subprocess.run([CLARION, *command], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("clarion: cannot reach PostgreSQL at 127.0.0.1:"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "s3cret" not in done.stderr
