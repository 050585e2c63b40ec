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
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from clarion.core.broker import create_broker
from clarion.delivery.queues import TOPOLOGY
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
from tests.integration.conftest import RABBITMQ_URL
from tests.integration.delivery.fake_fcm import FakeFcm, private_key, write_service_account
from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request
from tests.integration.delivery.fake_sendgrid import FakeSendGrid
from tests.integration.delivery.smtp_server import smtp_server

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
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str]
) -> None:
    database_url = make_database(migrated=True)
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
            "CLARION_HEALTH_PORT": "0",  # several workers on one host: each takes a free port
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
    broker = create_broker(RABBITMQ_URL, topology=TOPOLOGY, namespace=namespace)

    async def clean() -> None:
        await broker.connect()
        await broker.delete_topology()  # type: ignore[attr-defined]

    asyncio.run(clean())


def _base_env(database_url: str, namespace: str, port: int) -> dict[str, str]:
    address = f"127.0.0.1:{port}"
    return {
        "CLARION_DATABASE_URL": database_url,
        "CLARION_BROKER_URL": RABBITMQ_URL,
        "CLARION_BROKER_NAMESPACE": namespace,
        "CLARION_GRPC_PORT": str(port),
        "CLARION_USERS_ADDRESS": address,
        "CLARION_TEMPLATES_ADDRESS": address,
        "CLARION_DELIVERY_BACKOFF_BASE_S": "0.5",
        "CLARION_AUTH_REQUIRED": "false",
        "CLARION_HEALTH_PORT": "0",  # several workers on one host: each takes a free port
        "CLARION_LOG_LEVEL": "warning",
    }


async def _wait_settled(notifications: Any, notification_id: str, timeout_s: float = 60) -> Any:
    final = {notifications_pb2.NOTIFICATION_STATUS_SENT, notifications_pb2.NOTIFICATION_STATUS_FAILED}
    deadline = time.monotonic() + timeout_s
    while True:
        request = notifications_pb2.GetNotificationRequest(notification_id=notification_id)
        notification = await notifications.GetNotification(request, timeout=10)
        if notification.status in final:
            return notification
        assert time.monotonic() < deadline, notification
        await asyncio.sleep(0.2)


async def _cleanup(namespace: str, processes: Sequence[subprocess.Popen[str]] = ()) -> None:
    """Stop the processes, then delete their queues: a running consumer would declare its queue again."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        await asyncio.to_thread(process.wait, 30)
    broker = create_broker(RABBITMQ_URL, topology=TOPOLOGY, namespace=namespace)
    await broker.connect()
    await broker.delete_topology()  # type: ignore[attr-defined]


async def test_sendgrid_outcomes_and_replay_through_worker_processes(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str]
) -> None:
    database_url = await asyncio.to_thread(make_database, migrated=True)
    namespace, port = f"e2e-{uuid.uuid4().hex[:8]}", free_port()
    address = f"127.0.0.1:{port}"
    with FakeHttpServer() as http:
        sendgrid = FakeSendGrid(http, api_key=API_KEY)
        seen: collections.Counter[str] = collections.Counter()
        healed = {"down": False}

        def by_recipient(request: Request) -> Reply:
            to = request.json()["personalizations"][0]["to"][0]["email"]
            seen[to] += 1
            if to.startswith("flaky") and seen[to] <= 2:
                return Reply(503, {"errors": [{"message": "try later"}]})
            if to.startswith("bad"):
                return Reply(400, {"errors": [{"message": "The to email does not contain a valid address."}]})
            if to.startswith("down") and not healed["down"]:
                return Reply(503, {"errors": [{"message": "down"}]})
            return sendgrid._mail_send(request)

        http.route("/v3/mail/send", by_recipient)
        env = {
            **_base_env(database_url, namespace, port),
            "CLARION_SENDGRID_API_KEY": API_KEY,
            "CLARION_SENDGRID_HOST": sendgrid.host,
        }
        server = clarion_process("serve", "all", env=env)
        await asyncio.to_thread(wait_until_serving, address, server)
        processes = [server, *(clarion_process("worker", kind, env=env) for kind in ("dispatcher", "email"))]

        async with grpc.aio.insecure_channel(address) as channel:
            users = users_pb2_grpc.UserServiceStub(channel)
            notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
            await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
                templates_pb2.CreateTemplateRequest(template={"template_key": "t", "subject": "S", "body": "B"}),
                timeout=10,
            )
            sent = {}
            for name in ("flaky", "bad", "down"):
                user = await users.CreateUser(
                    users_pb2.CreateUserRequest(user={"email_address": f"{name}@example.com"}), timeout=10
                )
                request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="t")
                sent[name] = (await notifications.SendNotification(request, timeout=10)).notification.notification_id

            flaky = await _wait_settled(notifications, sent["flaky"])
            outcomes = [a.outcome for a in flaky.deliveries[0].attempts]
            assert flaky.status == notifications_pb2.NOTIFICATION_STATUS_SENT
            assert outcomes == [2, 2, 1], "503 twice, then 202"
            starts = [a.start_time.ToDatetime() for a in flaky.deliveries[0].attempts]
            assert starts[1] - starts[0] >= timedelta(seconds=0.9), "the backoff shows in the attempt times"

            bad = await _wait_settled(notifications, sent["bad"])
            assert bad.status == notifications_pb2.NOTIFICATION_STATUS_FAILED
            assert len(bad.deliveries[0].attempts) == 1

            down = await _wait_settled(notifications, sent["down"], timeout_s=90)
            assert down.status == notifications_pb2.NOTIFICATION_STATUS_FAILED
            assert len(down.deliveries[0].attempts) == 5, "always 503: FAILED after 5 attempts"
            letters = await notifications.ListDeadLetters(notifications_pb2.ListDeadLettersRequest(), timeout=10)
            assert {d.notification_id for d in letters.dead_letters} == {sent["bad"], sent["down"]}

            healed["down"] = True
            await notifications.ReplayDeadLetters(
                notifications_pb2.ReplayDeadLettersRequest(delivery_ids=[down.deliveries[0].delivery_id]), timeout=10
            )
            replayed = await _wait_settled(notifications, sent["down"])
            assert replayed.status == notifications_pb2.NOTIFICATION_STATUS_SENT
    await _cleanup(namespace, processes)


async def test_smtp_and_fcm_through_worker_processes(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str], tmp_path: Path
) -> None:
    database_url = await asyncio.to_thread(make_database, migrated=True)
    namespace, port = f"e2e-{uuid.uuid4().hex[:8]}", free_port()
    address = f"127.0.0.1:{port}"
    async with smtp_server() as smtp:
        with FakeHttpServer() as http:
            fcm = FakeFcm(http)
            account = write_service_account(tmp_path, key=private_key(), token_uri=fcm.token_uri)
            fcm.account_key = account.public_key
            env = {
                **_base_env(database_url, namespace, port),
                "CLARION_SMTP_HOST": smtp.host,
                "CLARION_SMTP_PORT": str(smtp.port),
                "CLARION_SMTP_STARTTLS": "false",
                "CLARION_FCM_CREDENTIALS_FILE": str(account.path),
                "CLARION_FCM_URL": http.url,
            }
            server = clarion_process("serve", "all", env=env)
            await asyncio.to_thread(wait_until_serving, address, server)
            processes = [
                server,
                *(clarion_process("worker", kind, env=env) for kind in ("dispatcher", "email", "push")),
            ]
            async with grpc.aio.insecure_channel(address) as channel:
                users = users_pb2_grpc.UserServiceStub(channel)
                notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
                await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
                    templates_pb2.CreateTemplateRequest(
                        template={
                            "template_key": "t",
                            "subject": "Hello {n}",
                            "body": "Body {n}",
                            "push_title": "Hi {n}",
                            "push_body": "Push {n}",
                        }
                    ),
                    timeout=10,
                )
                user = await users.CreateUser(
                    users_pb2.CreateUserRequest(user={"email_address": "both@example.com"}), timeout=10
                )
                await users.AddDevice(
                    users_pb2.AddDeviceRequest(
                        user_id=user.user_id, device={"token": "fcm-token-1", "platform": "DEVICE_PLATFORM_ANDROID"}
                    ),
                    timeout=10,
                )
                request = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="t")
                request.message_data.update({"n": "Ada"})
                sent = await notifications.SendNotification(request, timeout=10)
                notification = await _wait_settled(notifications, sent.notification.notification_id)
            assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SENT
            assert {d.provider for d in notification.deliveries} == {"smtp", "fcm"}
            [received] = smtp.handler.received
            assert received.message["Subject"] == "Hello Ada"
            [push] = fcm.sends
            assert push.json()["message"]["token"] == "fcm-token-1"
            assert push.json()["message"]["notification"]["title"] == "Hi Ada"
    await _cleanup(namespace, processes)
