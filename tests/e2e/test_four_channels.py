"""Every channel on a real `clarion up` (services, workers, Envoy, embedded PostgreSQL), with the providers played
by local fakes of SendGrid, FCM and Twilio and a local SMTP server: one notification reaches email, push, SMS and the
in-app inbox; an end user holding only a user token watches the inbox through the edge, sees the message arrive,
marks it read over REST and watches the unread count drop; SendGrid answering 503 for 30 s sends the email through
SMTP, and traffic returns to SendGrid afterwards."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clarion.keys.auth import bearer_auth
from clarion.v1 import (
    common_pb2,
    inbox_pb2,
    inbox_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.clients.conftest import ClarionUp, running_clarion_up
from tests.integration.delivery.fake_fcm import FakeFcm, private_key, write_service_account
from tests.integration.delivery.fake_http import FakeHttpServer, Reply
from tests.integration.delivery.fake_sendgrid import FakeSendGrid, sendgrid_errors
from tests.integration.delivery.fake_twilio import FakeTwilio
from tests.integration.delivery.smtp_server import SmtpServer, smtp_server

pytestmark = pytest.mark.e2e

SENDGRID_KEY = "SG.e2e-four-channels"
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "e2e-twilio-token"
OUTAGE_S = 30.0
BREAKER_RESET_S = 3.0
FINAL = {
    notifications_pb2.DELIVERY_STATUS_SENT,
    notifications_pb2.DELIVERY_STATUS_FAILED,
    notifications_pb2.DELIVERY_STATUS_SKIPPED,
}
TEMPLATE = templates_pb2.Template(
    template_key="shipped",
    subject="Order {order} shipped",
    body="Your order {order} is on its way.",
    push_title="Shipped",
    push_body="Order {order}",
    sms_body="Order {order} shipped.",
    in_app_title="Order {order} shipped",
    in_app_body="It arrives tomorrow.",
    in_app_action_url="https://app.example.com/orders/{order}",
)


class Fakes:
    def __init__(self, http: FakeHttpServer, smtp: SmtpServer, tmp_path: Path) -> None:
        self.sendgrid = FakeSendGrid(http, api_key=SENDGRID_KEY)
        self.twilio = FakeTwilio(http, account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
        self.fcm = FakeFcm(http)
        account = write_service_account(tmp_path, key=private_key(), token_uri=self.fcm.token_uri)
        self.fcm.account_key = account.public_key
        self.smtp = smtp
        self.environment = {
            "CLARION_EMAIL_PROVIDERS": "sendgrid,smtp",
            "CLARION_SENDGRID_API_KEY": SENDGRID_KEY,
            "CLARION_SENDGRID_HOST": http.url,
            "CLARION_SMTP_HOST": smtp.host,
            "CLARION_SMTP_PORT": str(smtp.port),
            "CLARION_SMTP_STARTTLS": "false",
            "CLARION_FCM_CREDENTIALS_FILE": str(account.path),
            "CLARION_FCM_URL": http.url,
            "CLARION_SMS_PROVIDER": "twilio",
            "CLARION_TWILIO_ACCOUNT_SID": TWILIO_SID,
            "CLARION_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "CLARION_TWILIO_FROM_NUMBER": "+15005550006",
            "CLARION_TWILIO_BASE_URL": http.url,
            "CLARION_PROVIDER_BREAKER_THRESHOLD": "2",
            "CLARION_PROVIDER_BREAKER_RESET_S": str(BREAKER_RESET_S),
            "CLARION_DELIVERY_BACKOFF_BASE_S": "0.5",
            "CLARION_DELIVERY_MAX_ATTEMPTS": "8",
        }


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[tuple[ClarionUp, Fakes]]:
    """`clarion up` sending to the fakes; the SMTP server runs on the test's event loop."""
    async with smtp_server() as smtp:
        with FakeHttpServer() as http:
            fakes = Fakes(http, smtp, tmp_path)
            # Started in a thread: the SMTP server must keep answering on this loop meanwhile.
            context = running_clarion_up(tmp_path, fakes.environment)
            running = await asyncio.to_thread(context.__enter__)
            try:
                yield running, fakes
            finally:
                await asyncio.to_thread(context.__exit__, None, None, None)


def rest(up: ClarionUp, method: str, path: str, token: str, body: Any = None) -> Any:
    """A REST call through Envoy with `token` as the bearer; the decoded JSON answer (200 only)."""
    host, port = up.http_address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        payload = response.read()
        assert response.status == 200, (response.status, payload)
        return json.loads(payload)
    finally:
        connection.close()


async def settled(service: Any, notification_id: str, *, timeout_s: float = 60) -> notifications_pb2.Notification:
    deadline = time.monotonic() + timeout_s
    while True:
        request = notifications_pb2.GetNotificationRequest(notification_id=notification_id)
        notification: notifications_pb2.Notification = await service.GetNotification(request, timeout=10)
        if notification.deliveries and all(d.status in FINAL for d in notification.deliveries):
            return notification
        assert time.monotonic() < deadline, f"not settled: {notification}"
        await asyncio.sleep(0.2)


async def send(service: Any, user_id: str, order: str, channels: list[int] | None = None) -> str:
    request = notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="shipped", channels=channels)
    request.message_data.update({"order": order})
    return str((await service.SendNotification(request, timeout=10)).notification.notification_id)


async def next_event(stream: Any, kind: str, *, timeout_s: float = 30) -> inbox_pb2.InboxEvent:
    """The next event of `kind` ("message" or "counts"), skipping heartbeats of the other kind."""
    async with asyncio.timeout(timeout_s):
        while True:
            event = await stream.read()
            assert isinstance(event, inbox_pb2.InboxEvent), "the stream ended"
            if event.WhichOneof("event") == kind:
                return event


async def test_four_channels_a_user_token_watching_its_inbox_and_email_failover(
    up: tuple[ClarionUp, Fakes],
) -> None:
    running, fakes = up
    async with grpc.aio.insecure_channel(running.grpc_address, interceptors=bearer_auth(running.api_key)) as channel:
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        await templates_pb2_grpc.TemplateServiceStub(channel).CreateTemplate(
            templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10
        )
        users = users_pb2_grpc.UserServiceStub(channel)
        user = await users.CreateUser(
            users_pb2.CreateUserRequest(user={"email_address": "ada@example.com", "phone_number": "+14155550123"}),
            timeout=10,
        )
        await users.AddDevice(
            users_pb2.AddDeviceRequest(
                user_id=user.user_id, device={"token": "fcm-1", "platform": "DEVICE_PLATFORM_WEB"}
            ),
            timeout=10,
        )

        # The product's backend makes a user token over REST and hands it to Ada's browser.
        made = await asyncio.to_thread(
            rest, running, "POST", f"/v1/users/{user.user_id}:createToken", running.api_key, {}
        )
        token = made["token"]
        # Ada's browser holds only that token, and watches her inbox over gRPC through the edge.
        async with grpc.aio.insecure_channel(running.http_address, interceptors=bearer_auth(token)) as browser:
            stream = inbox_pb2_grpc.InboxServiceStub(browser).WatchInbox(inbox_pb2.WatchInboxRequest(), timeout=120)
            start = await next_event(stream, "counts")
            assert start.counts.unread_count == 0

            notification = await settled(notifications, await send(notifications, user.user_id, "A-17"))
            providers = {d.channel: (d.status, d.provider) for d in notification.deliveries}
            sent = notifications_pb2.DELIVERY_STATUS_SENT
            assert providers == {
                common_pb2.CHANNEL_EMAIL: (sent, "sendgrid"),
                common_pb2.CHANNEL_PUSH: (sent, "fcm"),
                common_pb2.CHANNEL_SMS: (sent, "twilio"),
                common_pb2.CHANNEL_IN_APP: (sent, "inbox"),
            }
            assert [r.json()["personalizations"][0]["to"][0]["email"] for r in fakes.sendgrid.requests] == [
                "ada@example.com"
            ]
            assert [s.json()["message"]["token"] for s in fakes.fcm.sends] == ["fcm-1"]
            assert [(m["to"], m["body"]) for m in fakes.twilio.messages] == [("+14155550123", "Order A-17 shipped.")]

            arrived = await next_event(stream, "message")
            assert arrived.message.title == "Order A-17 shipped"
            assert arrived.message.action_url == "https://app.example.com/orders/A-17"
            counted = await next_event(stream, "counts")
            assert counted.counts.unread_count == 1

            marked = await asyncio.to_thread(
                rest,
                running,
                "POST",
                f"/v1/users/{user.user_id}/inbox:mark",
                token,
                {"action": "MARK_ACTION_READ", "message_ids": [arrived.message.message_id]},
            )
            assert marked["updated_count"] == 1
            dropped = await next_event(stream, "counts")
            assert dropped.counts.unread_count == 0
            counts = await asyncio.to_thread(rest, running, "GET", f"/v1/users/{user.user_id}/inbox:unreadCount", token)
            assert counts["unread_count"] == 0
            stream.cancel()

        # SendGrid answers 503 for 30 s: once its breaker opens, email goes out through SMTP.
        fakes.sendgrid.then(*[Reply(503, sendgrid_errors("service unavailable"))] * 10_000)
        outage_ends = time.monotonic() + OUTAGE_S
        during: list[notifications_pb2.Delivery] = []
        while time.monotonic() < outage_ends - 5:
            email_only = await send(notifications, user.user_id, f"O-{len(during)}", [common_pb2.CHANNEL_EMAIL])
            [delivery] = (await settled(notifications, email_only)).deliveries
            during.append(delivery)
            await asyncio.sleep(2)
        assert all(d.status == sent for d in during), [(d.status, d.status_reason) for d in during]
        assert {d.provider for d in during} == {"smtp"}, [d.provider for d in during]
        assert len(fakes.smtp.handler.received) == len(during)
        assert fakes.sendgrid.accepted == 1  # the first notification's only

        # SendGrid is back: after a half-open trial succeeds, email returns to it.
        await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))
        fakes.sendgrid.replies.clear()
        deadline = time.monotonic() + 60
        after: list[str] = []
        while after[-2:] != ["sendgrid", "sendgrid"]:
            assert time.monotonic() < deadline, after
            email_only = await send(notifications, user.user_id, f"R-{len(after)}", [common_pb2.CHANNEL_EMAIL])
            [delivery] = (await settled(notifications, email_only)).deliveries
            assert delivery.status == sent
            after.append(delivery.provider)
            await asyncio.sleep(1)
        stats = await notifications.GetDeliveryStats(notifications_pb2.GetDeliveryStatsRequest(), timeout=10)
        by_provider = {group.provider: group.sent for group in stats.providers}
        assert by_provider["smtp"] >= len(during)
        assert by_provider["sendgrid"] >= 3
        assert by_provider["twilio"] == by_provider["fcm"] == by_provider["inbox"] == 1
