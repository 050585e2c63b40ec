"""The whole system as separate processes on real PostgreSQL and RabbitMQ — `clarion serve all`, the dispatcher, the
email and push workers and the sweeper — with SendGrid played by a local fake server. An email worker is SIGKILLed
mid-batch: every notification still ends SENT, none is lost, and duplicate sends are counted."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
import uuid
from collections.abc import Callable

import grpc
import pytest

from clarion.core.broker import create_broker
from clarion.core.db import upgrade_database
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
from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request
from tests.integration.delivery.fake_sendgrid import FakeSendGrid
from tests.integration.notifications.test_dispatcher import RABBITMQ_URL

pytestmark = pytest.mark.e2e

API_KEY = "SG.e2e-key"
COUNT = 40


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def send_all(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        templates = templates_pb2_grpc.TemplateServiceStub(channel)
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        await templates.CreateTemplate(
            templates_pb2.CreateTemplateRequest(template={"template_key": "e2e", "subject": "Hi {n}", "body": "#{n}"}),
            timeout=10,
        )
        user = await users.CreateUser(
            users_pb2.CreateUserRequest(user={"email_address": "e2e@example.com"}), timeout=10
        )
        ids = []
        for n in range(COUNT):
            request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="e2e")
            request.message_data.update({"n": str(n)})
            ids.append((await notifications.SendNotification(request, timeout=10)).notification.notification_id)
        return ids


async def statuses(address: str, ids: list[str]) -> collections.Counter[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        found = collections.Counter[int]()
        for notification_id in ids:
            request = notifications_pb2.GetNotificationRequest(notification_id=notification_id)
            found[(await notifications.GetNotification(request, timeout=10)).status] += 1
        return found


def test_a_worker_killed_mid_batch_loses_nothing(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[[], str]
) -> None:
    database_url = make_database()
    upgrade_database(database_url)
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    port = free_port()
    address = f"127.0.0.1:{port}"
    with FakeHttpServer() as http:
        sendgrid = FakeSendGrid(http, api_key=API_KEY)

        def slow(request: Request) -> Reply:
            time.sleep(0.1)  # slow enough that a worker has several sends in flight when it is killed
            return sendgrid._mail_send(request)

        http.route("/v3/mail/send", slow)
        env = {
            "CLARION_DATABASE_URL": database_url,
            "CLARION_BROKER_URL": RABBITMQ_URL,
            "CLARION_BROKER_NAMESPACE": namespace,
            "CLARION_GRPC_PORT": str(port),
            "CLARION_USERS_ADDRESS": address,
            "CLARION_TEMPLATES_ADDRESS": address,
            "CLARION_SENDGRID_API_KEY": API_KEY,
            "CLARION_SENDGRID_HOST": sendgrid.host,
            "CLARION_DELIVERY_LEASE_S": "3",
            "CLARION_SWEEPER_INTERVAL_S": "1",
            "CLARION_WORKER_PREFETCH": "4",
            "CLARION_AUTH_REQUIRED": "false",
            "CLARION_LOG_LEVEL": "warning",
        }
        server = clarion_process("serve", "all", env=env)
        wait_until_serving(address, server)
        running = [
            server,
            clarion_process("worker", "dispatcher", env=env),
            clarion_process("worker", "sweeper", env=env),
        ]
        victim = clarion_process("worker", "email", env=env)

        ids = asyncio.run(send_all(address))
        wait_for(lambda: len(sendgrid.requests) >= 8, timeout_s=60, what="the first sends")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        running.append(clarion_process("worker", "email", env=env))

        def all_sent() -> bool:
            found = asyncio.run(statuses(address, ids))
            return found[notifications_pb2.NOTIFICATION_STATUS_SENT] == COUNT

        wait_for(all_sent, timeout_s=120, what="every notification to be SENT")
        receipts = collections.Counter(r.json()["custom_args"]["delivery_id"] for r in sendgrid.requests)
        duplicates = sum(n - 1 for n in receipts.values())
        assert len(receipts) == COUNT, "every delivery reached the provider"
        # A duplicate can only come from a send that succeeded while its worker died before committing: at most
        # the killed worker's in-flight sends (its prefetch).
        assert duplicates <= 4, receipts
        for process in running:  # SIGTERM: each drains and exits cleanly
            process.send_signal(signal.SIGTERM)
        for process in running:
            assert process.wait(timeout=30) == 0
    broker = create_broker(RABBITMQ_URL, namespace=namespace)

    async def clean() -> None:
        await broker.connect()
        await broker.delete_topology()  # type: ignore[attr-defined]

    asyncio.run(clean())
