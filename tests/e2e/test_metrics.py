"""Prometheus metrics of real processes after real traffic: `clarion serve all` on its metrics port, the dispatcher
and an email worker on their health ports, over real PostgreSQL and RabbitMQ with SendGrid played by a local fake.
Each counter moved by exactly what the traffic should have moved it."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
from tests.e2e.test_workers_as_processes import API_KEY, _base_env, _cleanup
from tests.integration.delivery.fake_http import FakeHttpServer, Reply, Request
from tests.integration.delivery.fake_sendgrid import FakeSendGrid

pytestmark = pytest.mark.e2e

OK_COUNT = 5
TERMINAL = {
    notifications_pb2.NOTIFICATION_STATUS_SENT,
    notifications_pb2.NOTIFICATION_STATUS_FAILED,
    notifications_pb2.NOTIFICATION_STATUS_SKIPPED,
}


def scrape(port: int, *, timeout_s: float = 30) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a process's /metrics, by name and labels; waits for the endpoint to come up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            break
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"nothing serves /metrics on port {port}"
            time.sleep(0.2)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


async def send_traffic(address: str) -> list[str]:
    """OK_COUNT good notifications, one retried once, one refused by SendGrid, one to a user who opted out of email,
    one idempotent replay and one bad request. Returns the accepted notifications' ids."""
    async with grpc.aio.insecure_channel(address) as channel:
        users = users_pb2_grpc.UserServiceStub(channel)
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            templates_pb2.CreateTemplateRequest(template={"template_key": "m", "subject": "S {n}", "body": "B"}),
            timeout=10,
        )
        ids = []
        people = {"ok": OK_COUNT, "flaky": 1, "bad": 1, "optout": 1}
        for name, count in people.items():
            user: dict[str, object] = {"email_address": f"{name}@example.com"}
            if name == "optout":
                user["preferences"] = {"email_enabled": False}
            created = await users.CreateUser(users_pb2.CreateUserRequest(user=user), timeout=10)
            for n in range(count):
                request = notifications_pb2.SendNotificationRequest(user_id=created.user_id, template_key="m")
                request.message_data.update({"n": str(n)})
                if name == "ok" and n == 0:
                    request.request_id = "metrics-replay-key"
                    ids.append((await notifications.SendNotification(request, timeout=10)).notification.notification_id)
                    replay = await notifications.SendNotification(request, timeout=10)
                    assert replay.replayed
                    continue
                ids.append((await notifications.SendNotification(request, timeout=10)).notification.notification_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await notifications.SendNotification(notifications_pb2.SendNotificationRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return ids


async def wait_terminal(address: str, ids: list[str], *, timeout_s: float = 90) -> collections.Counter[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            found = collections.Counter[int]()
            for notification_id in ids:
                request = notifications_pb2.GetNotificationRequest(notification_id=notification_id)
                found[(await notifications.GetNotification(request, timeout=10)).status] += 1
            if sum(found[s] for s in TERMINAL) == len(ids):
                return found
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.3)


def test_each_process_counts_what_happened(
    clarion_process: Callable[..., subprocess.Popen[str]], make_database: Callable[..., str]
) -> None:
    database_url = make_database(migrated=True)
    namespace, port = f"e2e-{uuid.uuid4().hex[:8]}", free_port()
    address = f"127.0.0.1:{port}"
    server_metrics, dispatcher_health, email_health = free_port(), free_port(), free_port()
    with FakeHttpServer() as http:
        sendgrid = FakeSendGrid(http, api_key=API_KEY)
        seen: collections.Counter[str] = collections.Counter()

        def by_recipient(request: Request) -> Reply:
            to = request.json()["personalizations"][0]["to"][0]["email"]
            seen[to] += 1
            if to.startswith("flaky") and seen[to] == 1:
                return Reply(503, {"errors": [{"message": "try later"}]})
            if to.startswith("bad"):
                return Reply(400, {"errors": [{"message": "The to email does not contain a valid address."}]})
            return sendgrid._mail_send(request)

        http.route("/v3/mail/send", by_recipient)
        env = {
            **_base_env(database_url, namespace, port),
            "CLARION_SENDGRID_API_KEY": API_KEY,
            "CLARION_SENDGRID_HOST": sendgrid.host,
        }
        server = clarion_process("serve", "all", env={**env, "CLARION_METRICS_PORT": str(server_metrics)})
        wait_until_serving(address, server)
        workers = [
            clarion_process("worker", "dispatcher", env={**env, "CLARION_HEALTH_PORT": str(dispatcher_health)}),
            clarion_process("worker", "email", env={**env, "CLARION_HEALTH_PORT": str(email_health)}),
        ]

        ids = asyncio.run(send_traffic(address))
        found = asyncio.run(wait_terminal(address, ids))
        assert found[notifications_pb2.NOTIFICATION_STATUS_SENT] == OK_COUNT + 1
        assert found[notifications_pb2.NOTIFICATION_STATUS_FAILED] == 1
        assert found[notifications_pb2.NOTIFICATION_STATUS_SKIPPED] == 1

        served = scrape(server_metrics)
        send = {"grpc_service": "clarion.v1.NotificationService", "grpc_method": "SendNotification"}
        # OK: every accepted notification and the replay; INVALID_ARGUMENT: the empty request.
        assert value(served, "clarion_grpc_server_handled_total", **send, grpc_code="OK") == len(ids) + 1
        assert value(served, "clarion_grpc_server_handled_total", **send, grpc_code="INVALID_ARGUMENT") == 1
        assert value(served, "clarion_grpc_server_handling_seconds_count", **send) == len(ids) + 2
        assert value(served, "clarion_notifications_accepted_total", priority="normal") == len(ids)
        assert value(served, "clarion_notifications_replayed_total") == 1
        assert value(served, "clarion_cache_requests_total", cache="user") > 0

        dispatched = scrape(dispatcher_health)
        # Published once each, whatever the retries: those go through the broker's retry tiers, not the dispatcher.
        assert value(dispatched, "clarion_dispatcher_deliveries_published_total", channel="email") == OK_COUNT + 2
        # Planned as skipped at accept, so counted where the notification was accepted.
        skipped = {"channel": "email", "reason": "email_disabled_by_user"}
        assert value(served, "clarion_dispatcher_deliveries_skipped_total", **skipped) == 1

        delivered = scrape(email_health)
        email = {"channel": "email", "provider": "sendgrid"}
        assert value(delivered, "clarion_deliveries_total", **email, outcome="sent") == OK_COUNT + 1
        assert value(delivered, "clarion_deliveries_total", **email, outcome="retry") == 1
        assert value(delivered, "clarion_deliveries_total", **email, outcome="failed") == 1
        assert value(delivered, "clarion_dead_letters_total", **email) == 1
        assert value(delivered, "clarion_delivery_attempt_seconds_count", **email) == OK_COUNT + 3
        assert value(delivered, "clarion_delivery_time_to_send_seconds_count", **email) == OK_COUNT + 1
        assert value(delivered, "clarion_circuit_breaker_state", breaker="provider:sendgrid") == 0

        # The dispatcher samples its gauges every few seconds: the dead letter shows, and nothing is left waiting.
        deadline = time.monotonic() + 20
        # The row turns FAILED before the message reaches failed.queue (its outcome commits first): wait for both.
        while (
            value(gauges := scrape(dispatcher_health), "clarion_dead_letters_pending") != 1
            or value(gauges, "clarion_queue_messages", queue="failed.queue") != 1
        ):
            assert time.monotonic() < deadline, "the dead-letter gauges never showed the dead letter"
            time.sleep(0.5)
        assert value(gauges, "clarion_dispatcher_lag_seconds") == 0
        assert value(gauges, "clarion_queue_messages", queue="failed.queue") == 1
        assert value(gauges, "clarion_queue_messages", queue="email.queue") == 0
        # Stopped before their queues go: a running consumer would declare its queue again.
        for process in [*workers, server]:
            process.send_signal(signal.SIGTERM)
        for process in [*workers, server]:
            process.wait(timeout=30)
    asyncio.run(_cleanup(namespace))
