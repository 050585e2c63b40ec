"""The channel workers end to end: accept → dispatcher → broker → worker → provider (the real SendGrid client
against a local fake of SendGrid's server; the real file and simulated providers), on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import update

from clarion.core.broker import Broker, Message, Received
from clarion.core.config import load_settings
from clarion.core.db import FastPath, utcnow
from clarion.delivery import store
from clarion.delivery.breaker import ProviderBreaker
from clarion.delivery.channels import CHANNELS
from clarion.delivery.consumer import DeliveryWorker
from clarion.delivery.failover import Providers
from clarion.delivery.lifecycle import DeliveryStatus
from clarion.delivery.providers.factory import create_email_providers, create_push_provider
from clarion.delivery.queues import CHANNEL_QUEUES, EMAIL_QUEUE, FAILED_QUEUE
from clarion.delivery.report import format_report, report_json
from clarion.delivery.sweeper import Sweeper
from clarion.notifications import models as m
from clarion.v1 import common_pb2, inbox_pb2, inbox_pb2_grpc, notifications_pb2, templates_pb2, users_pb2
from tests.integration.conftest import RunningClarion
from tests.integration.delivery.fake_http import FakeHttpServer, Reply
from tests.integration.delivery.fake_sendgrid import FakeSendGrid, sendgrid_errors
from tests.integration.delivery.fake_twilio import FakeTwilio, twilio_reply
from tests.integration.delivery.smtp_server import SmtpServer, smtp_server
from tests.integration.notifications.test_dispatcher import TEMPLATE, dispatcher_for, get, send
from tests.integration.users.test_user_service import rpc_error, violations
from tests.proxy import TcpProxy

pytestmark = pytest.mark.integration

API_KEY = "SG.test-key"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-token"


@dataclass
class Pipeline:
    clarion: RunningClarion
    broker: Broker
    sendgrid: FakeSendGrid
    outbox: Path

    async def deliver(self, user_id: str, **fields: Any) -> str:
        """Send a notification and run the dispatcher once; returns the notification id."""
        notification_id = await send(self.clarion, user_id, **fields)
        await dispatcher_for(self.clarion, self.broker).run_once()
        return notification_id

    async def settled(self, notification_id: str, *, timeout_s: float = 20) -> notifications_pb2.Notification:
        """Wait until every delivery of the notification is final."""
        final = {
            notifications_pb2.DELIVERY_STATUS_SENT,
            notifications_pb2.DELIVERY_STATUS_FAILED,
            notifications_pb2.DELIVERY_STATUS_SKIPPED,
        }
        deadline = time.monotonic() + timeout_s
        while True:
            notification = await get(self.clarion, notification_id)
            if notification.deliveries and all(d.status in final for d in notification.deliveries):
                return notification
            assert time.monotonic() < deadline, f"not settled: {notification}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def pipeline(
    clarion: RunningClarion, broker: Broker, http_server: FakeHttpServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await pipeline(email="sendgrid"|"file", max_attempts=5)` starts email and push workers."""
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10)
    sendgrid = FakeSendGrid(http_server, api_key=API_KEY)
    started: list[Any] = []

    async def start(
        email: str = "sendgrid",
        max_attempts: int = 5,
        breaker: ProviderBreaker | None = None,
        fast: FastPath | None = None,
        lease_s: float = 30,
        fallback: SmtpServer | None = None,
        sms: str = "file",
        twilio_url: str = "",
    ) -> Pipeline:
        """`fallback`: email fails over from SendGrid (behind `breaker`) to this SMTP server (behind its own)."""
        settings = load_settings(
            email_provider=email,
            sendgrid_api_key=API_KEY,
            sendgrid_host=sendgrid.host,
            outbox_dir=tmp_path / "outbox",
            provider_timeout_s=5,
            sms_provider=sms,
            **(
                {"twilio_account_sid": TWILIO_SID, "twilio_auth_token": TWILIO_TOKEN}
                | {"twilio_from_number": "+15005550006", "twilio_base_url": twilio_url}
                if sms == "twilio"
                else {}
            ),
            **(
                {"email_providers": "sendgrid,smtp", "smtp_host": fallback.host, "smtp_port": fallback.port}
                | {"smtp_starttls": False}
                if fallback
                else {}
            ),
        )
        email_providers, push_provider = create_email_providers(settings), create_push_provider(settings)
        started.extend([*email_providers, push_provider])
        breakers = [breaker or ProviderBreaker(threshold=5, reset_s=30)]
        breakers += [ProviderBreaker(threshold=5, reset_s=30) for _ in email_providers[1:]]
        for channel in ("email", "push"):
            worker = DeliveryWorker(
                channel=channel,
                fast=fast or clarion.resources.fast,
                providers=Providers(list(zip(email_providers, breakers, strict=True))) if channel == "email" else None,
                provider=push_provider if channel == "push" else None,
                clients=clarion.resources.clients,
                max_attempts=max_attempts,
                lease_s=lease_s,
                backoff_base_s=0.5,  # lands in the 1 s retry tier
            )
            await worker.start(broker, f"{channel}.queue", prefetch=4)
        # SMS and in-app as `clarion worker sms` and `clarion worker in_app` make them.
        for channel in ("sms", "in_app"):
            [provider] = CHANNELS[channel].create_providers(settings, fast or clarion.resources.fast)
            started.append(provider)
            worker = DeliveryWorker(
                channel=channel,
                fast=fast or clarion.resources.fast,
                providers=Providers([(provider, ProviderBreaker(threshold=5, reset_s=30))]),
                clients=clarion.resources.clients,
                max_attempts=max_attempts,
                lease_s=lease_s,
                backoff_base_s=0.5,
            )
            await worker.start(broker, CHANNEL_QUEUES[channel], prefetch=4)
        return Pipeline(clarion, broker, sendgrid, tmp_path / "outbox")

    yield start
    await broker.stop_consuming(timeout_s=5)
    for provider in started:
        await provider.close()


async def make_user(clarion: RunningClarion, **fields: Any) -> str:
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=fields), timeout=10)
    return str(user.user_id)


def outcomes(delivery: notifications_pb2.Delivery) -> list[int]:
    return [a.outcome for a in delivery.attempts]


SUCCEEDED = notifications_pb2.ATTEMPT_OUTCOME_SUCCEEDED
TRANSIENT = notifications_pb2.ATTEMPT_OUTCOME_TRANSIENT_FAILURE
PERMANENT = notifications_pb2.ATTEMPT_OUTCOME_PERMANENT_FAILURE
UNKNOWN = notifications_pb2.ATTEMPT_OUTCOME_UNKNOWN


async def test_an_email_goes_through_sendgrid_with_the_delivery_id(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    user_id = await make_user(run.clarion, email_address="ada@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]))
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert (delivery.provider, delivery.provider_message_id) == ("sendgrid", "sg-message-1")
    assert outcomes(delivery) == [SUCCEEDED]
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SENT
    [request] = run.sendgrid.requests
    mail = request.json()
    assert mail["personalizations"][0]["to"][0]["email"] == "ada@example.com"
    assert mail["subject"] == "Hi Ada"
    assert mail["custom_args"]["delivery_id"] == delivery.delivery_id


async def test_transient_failures_are_retried_with_backoff_until_sent(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    run.sendgrid.then(
        Reply(503, sendgrid_errors("busy")), Reply(429, sendgrid_errors("slow down"), {"Retry-After": "1"})
    )
    user_id = await make_user(run.clarion, email_address="bo@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]))
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert outcomes(delivery) == [TRANSIENT, TRANSIENT, SUCCEEDED]
    starts = [a.start_time.ToDatetime() for a in delivery.attempts]
    assert starts[2] - starts[1] >= timedelta(seconds=0.9), "Retry-After: 1 is honoured"
    assert "503" in delivery.attempts[0].error
    assert len(run.sendgrid.requests) == 3


async def test_a_permanent_failure_fails_at_once_and_dead_letters(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    run.sendgrid.then(Reply(400, sendgrid_errors("The to email does not contain a valid address.")))
    user_id = await make_user(run.clarion, email_address="cy@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]))
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_FAILED
    assert outcomes(delivery) == [PERMANENT]
    assert "valid address" in delivery.status_reason
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_FAILED
    assert await dead_letters(run.broker) == [delivery.delivery_id]


async def test_attempts_run_out_then_fail_and_dead_letter(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline(max_attempts=2)
    run.sendgrid.then(*[Reply(503, sendgrid_errors("down"))] * 5)
    user_id = await make_user(run.clarion, email_address="di@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]))
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_FAILED
    assert outcomes(delivery) == [TRANSIENT, TRANSIENT]
    assert delivery.status_reason.startswith("attempts exhausted")
    assert await dead_letters(run.broker) == [delivery.delivery_id]


async def test_a_duplicate_message_is_acked_and_dropped(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    user_id = await make_user(run.clarion, email_address="ed@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]))
    [delivery] = notification.deliveries
    body = f'{{"delivery_id": "{delivery.delivery_id}"}}'.encode()
    await run.broker.publish(EMAIL_QUEUE, Message(message_id=delivery.delivery_id, body=body))
    await asyncio.sleep(1)
    assert len(run.sendgrid.requests) == 1, "the provider is not called again for a delivery already sent"
    assert await run.broker.queue_depth(EMAIL_QUEUE) == 0


async def test_push_goes_to_every_device_through_the_simulated_provider(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline(email="file")
    user_id = await make_user(run.clarion, email_address="fa@example.com")
    for token in ("tok-a", "tok-b"):
        await run.clarion.users.AddDevice(
            users_pb2.AddDeviceRequest(user_id=user_id, device={"token": token, "platform": "DEVICE_PLATFORM_ANDROID"}),
            timeout=10,
        )
    notification = await run.settled(await run.deliver(user_id))
    by_channel = {d.channel: d for d in notification.deliveries}
    assert by_channel[common_pb2.CHANNEL_PUSH].status == notifications_pb2.DELIVERY_STATUS_SENT
    assert outcomes(by_channel[common_pb2.CHANNEL_PUSH]) == [SUCCEEDED, SUCCEEDED]
    assert by_channel[common_pb2.CHANNEL_PUSH].provider == "simulated"
    assert by_channel[common_pb2.CHANNEL_EMAIL].provider == "file"
    assert (run.outbox / f"{by_channel[common_pb2.CHANNEL_EMAIL].delivery_id}.eml").exists()


async def died_mid_send(run: Pipeline, email_address: str, *, attempt: int) -> str:
    """A notification whose email delivery a worker claimed (attempt `attempt`) and then died with: SENDING with a
    lease already over, and the message long gone. The sweeper takes it back and the relay publishes it again;
    returns the notification id."""
    user_id = await make_user(run.clarion, email_address=email_address)
    notification_id = await send(run.clarion, user_id, channels=[1])
    dispatcher = dispatcher_for(run.clarion, run.broker)
    await dispatcher.dispatch_due()
    async with run.clarion.resources.sessions.begin() as session:
        await session.execute(
            update(m.DeliveryRow).values(
                status=DeliveryStatus.SENDING,
                attempt_count=attempt,
                published_at=utcnow(),
                lease_until=utcnow() - timedelta(seconds=1),
            )
        )
    assert (await sweeper(run.clarion).sweep_once()).released == 1
    await dispatcher.publish_due()
    return notification_id


async def test_the_sweeper_takes_back_a_delivery_whose_worker_died(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline(email="file")
    notification_id = await died_mid_send(run, "gi@example.com", attempt=1)
    notification = await run.settled(notification_id)
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    # The first attempt is in the history: nobody knows whether it reached the provider.
    assert [(a.attempt_number, a.outcome) for a in delivery.attempts] == [(1, UNKNOWN), (2, SUCCEEDED)]
    assert "lease expired" in delivery.attempts[0].error


def sweeper(clarion: RunningClarion, *, lease_s: float = 1, republish_after_s: float = 600) -> Sweeper:
    return Sweeper(fast=clarion.resources.fast, lease_s=lease_s, republish_after_s=republish_after_s, interval_s=1)


async def dead_letters(broker: Broker) -> list[str]:
    """Drain failed.queue; the delivery ids found there."""
    found: list[str] = []
    done = asyncio.Event()
    expected = 1  # each test dead-letters one delivery; its message may still be on its way to failed.queue

    async def take(received: Received) -> None:
        found.append(received.message.message_id)
        await received.ack()
        if len(found) >= expected:
            done.set()

    await broker.consume(FAILED_QUEUE, take, prefetch=10)
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(0.3)  # nothing more should arrive
    return found


async def test_a_dead_letter_is_listed_and_replayed_to_sent(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    run.sendgrid.then(Reply(400, sendgrid_errors("The from address does not match a verified Sender Identity.")))
    user_id = await make_user(run.clarion, email_address="hu@example.com")
    notification_id = await run.deliver(user_id, channels=[1])
    [failed] = (await run.settled(notification_id)).deliveries
    assert failed.status == notifications_pb2.DELIVERY_STATUS_FAILED
    assert await dead_letters(run.broker) == [failed.delivery_id]

    listed = await run.clarion.notifications.ListDeadLetters(
        notifications_pb2.ListDeadLettersRequest(user_id=user_id), timeout=10
    )
    [letter] = listed.dead_letters
    assert (letter.delivery_id, letter.notification_id, letter.attempt_count) == (
        failed.delivery_id,
        notification_id,
        1,
    )
    assert "Sender Identity" in letter.reason

    # The sender is fixed on SendGrid's side: the next request is accepted.
    replay = await run.clarion.notifications.ReplayDeadLetters(
        notifications_pb2.ReplayDeadLettersRequest(delivery_ids=[failed.delivery_id, str(uuid.uuid4())]), timeout=10
    )
    assert list(replay.delivery_ids) == [failed.delivery_id]
    assert len(replay.not_replayed_ids) == 1
    await dispatcher_for(run.clarion, run.broker).publish_due()
    notification = await run.settled(notification_id)
    [delivery] = notification.deliveries
    assert delivery.delivery_id == failed.delivery_id, "a replay keeps the delivery id"
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert outcomes(delivery) == [PERMANENT, SUCCEEDED]
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SENT
    listed = await run.clarion.notifications.ListDeadLetters(notifications_pb2.ListDeadLettersRequest(), timeout=10)
    assert list(listed.dead_letters) == []


async def test_replay_refuses_an_empty_or_ambiguous_request(clarion: RunningClarion) -> None:
    for request in (
        notifications_pb2.ReplayDeadLettersRequest(),
        notifications_pb2.ReplayDeadLettersRequest(delivery_ids=[str(uuid.uuid4())], all=True),
        notifications_pb2.ReplayDeadLettersRequest(delivery_ids=["nope"]),
    ):
        code, status = await rpc_error(clarion.notifications.ReplayDeadLetters(request, timeout=10))
        assert code.name == "INVALID_ARGUMENT"
        assert any(field.startswith("delivery_ids") for field in violations(status))
    everything = await clarion.notifications.ReplayDeadLetters(
        notifications_pb2.ReplayDeadLettersRequest(all=True), timeout=10
    )
    assert list(everything.delivery_ids) == []


async def test_the_deliveries_report_shows_status_attempts_and_last_error(pipeline: Callable[..., Any]) -> None:
    run: Pipeline = await pipeline()
    run.sendgrid.then(Reply(400, sendgrid_errors("Invalid recipient")))
    user_id = await make_user(run.clarion, email_address="iv@example.com")
    [failed] = (await run.settled(await run.deliver(user_id, channels=[1]))).deliveries
    async with run.clarion.resources.fast.connection() as connection:
        lines = await store.recent_deliveries(connection, limit=5)
    [line] = [x for x in lines if x.delivery_id == failed.delivery_id]
    assert (line.status, line.attempts, line.provider, line.channel) == ("failed", 1, "sendgrid", "email")
    assert "Invalid recipient" in line.last_error
    report = format_report(lines)
    assert failed.delivery_id in report
    assert "iv@example.com" not in report
    [row] = [x for x in json.loads(report_json(lines)) if x["delivery_id"] == failed.delivery_id]
    assert (row["status"], row["attempts"], row["provider"]) == ("failed", 1, "sendgrid")
    assert "Invalid recipient" in row["last_error"]


async def test_an_open_provider_breaker_parks_messages_without_spending_attempts(
    pipeline: Callable[..., Any], log_output: Any
) -> None:
    run: Pipeline = await pipeline(breaker=ProviderBreaker(threshold=2, reset_s=1.5))
    run.sendgrid.then(Reply(503, sendgrid_errors("down")), Reply(503, sendgrid_errors("down")))
    user_id = await make_user(run.clarion, email_address="jo@example.com")
    notification = await run.settled(await run.deliver(user_id, channels=[1]), timeout_s=30)
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert outcomes(delivery) == [TRANSIENT, TRANSIENT, SUCCEEDED], "parked returns are not attempts"
    assert len(run.sendgrid.requests) == 3
    assert "provider_circuit_open" in log_output.getvalue()


async def test_email_fails_over_to_smtp_while_sendgrid_is_down_and_returns_after(
    pipeline: Callable[..., Any],
) -> None:
    async with smtp_server() as smtp:
        run: Pipeline = await pipeline(breaker=ProviderBreaker(threshold=2, reset_s=2), fallback=smtp)
        run.sendgrid.then(*[Reply(503, sendgrid_errors("down"))] * 2)
        user_id = await make_user(run.clarion, email_address="fo@example.com")

        # SendGrid fails twice and its breaker opens: the retry goes out through SMTP, with no attempt parked.
        first = (await run.settled(await run.deliver(user_id, channels=[1]), timeout_s=30)).deliveries[0]
        assert first.status == notifications_pb2.DELIVERY_STATUS_SENT
        assert [(a.provider, a.outcome) for a in first.attempts][-1] == ("smtp", SUCCEEDED)
        assert ("sendgrid", TRANSIENT) in [(a.provider, a.outcome) for a in first.attempts]
        assert first.provider == "smtp"
        assert [m.rcpt_tos for m in smtp.handler.received] == [["fo@example.com"]]
        # While the breaker is open, what comes next goes to SMTP directly, without trying SendGrid (on a slow
        # machine the breaker may have half-opened already: then SendGrid takes it, as the next steps check).
        second = (await run.settled(await run.deliver(user_id, channels=[1]), timeout_s=30)).deliveries[0]
        assert [(a.provider, a.outcome) for a in second.attempts] in ([("smtp", SUCCEEDED)], [("sendgrid", SUCCEEDED)])
        # Once SendGrid's breaker half-opens, its trial succeeds (it answers 202 again) and traffic returns to it.
        await asyncio.sleep(2.1)
        third = (await run.settled(await run.deliver(user_id, channels=[1]), timeout_s=30)).deliveries[0]
        assert [(a.provider, a.outcome) for a in third.attempts] == [("sendgrid", SUCCEEDED)]
        fourth = (await run.settled(await run.deliver(user_id, channels=[1]), timeout_s=30)).deliveries[0]
        assert fourth.provider == "sendgrid"


async def test_a_worker_holds_its_messages_while_postgresql_is_away(
    pipeline: Callable[..., Any], clarion: RunningClarion, broker: Broker
) -> None:
    """Requeued at once, a message would spend the broker's delivery limit (20) in well under a second and be
    dead-lettered with its delivery still queued in PostgreSQL; held, it is delivered once the database is back."""
    database = urlsplit(clarion.resources.engine.url.render_as_string(hide_password=False))
    proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432)
    await proxy.start()
    through_proxy = urlunsplit(database._replace(netloc=f"{database.username}@127.0.0.1:{proxy.port}"))
    fast = FastPath(through_proxy, max_size=4)
    try:
        run: Pipeline = await pipeline(fast=fast)
        user_id = await make_user(run.clarion, email_address="pa@example.com")
        await proxy.cut()
        # Accepted and published on the server's own pool; only the worker's database is away.
        notification_id = await run.deliver(user_id, channels=[1])
        await asyncio.sleep(3)
        assert run.sendgrid.requests == [], "nothing is sent without a claim"
        assert await broker.queue_depth(FAILED_QUEUE) == 0, "the message is held, not dead-lettered"
        await proxy.start()
        notification = await run.settled(notification_id)
    finally:
        await proxy.cut()
        await fast.close()
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert [(a.attempt_number, a.outcome) for a in delivery.attempts] == [(1, SUCCEEDED)]
    assert len(run.sendgrid.requests) == 1


async def test_a_delivery_claimed_after_its_last_attempts_lease_expired_is_not_sent_again(
    pipeline: Callable[..., Any],
) -> None:
    run: Pipeline = await pipeline(max_attempts=2)
    # Attempt 2 of 2 was claimed and its worker died: its outcome is unknown, and no attempt is left.
    notification_id = await died_mid_send(run, "la@example.com", attempt=2)
    notification = await run.settled(notification_id)
    [delivery] = notification.deliveries
    assert delivery.status == notifications_pb2.DELIVERY_STATUS_FAILED
    assert "no attempt left" in delivery.status_reason
    assert run.sendgrid.requests == [], "nothing sent beyond the last attempt"
    assert [(a.attempt_number, a.outcome) for a in delivery.attempts] == [(2, UNKNOWN)]


EVERYWHERE = templates_pb2.Template(
    template_key="everywhere",
    subject="Order {order} shipped",
    body="Your order {order} is on its way.",
    push_title="Shipped",
    push_body="Order {order}",
    sms_body="Order {order} shipped. Track: https://t.example/{order}",
    in_app_title="Order {order} shipped",
    in_app_body="It arrives tomorrow.",
    in_app_action_url="https://app.example.com/orders/{order}",
    in_app_data={"order": "{order}"},
)


async def send_everywhere(run: Pipeline, user_id: str) -> str:
    await run.clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=EVERYWHERE), timeout=10)
    request = notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="everywhere")
    request.message_data.update({"order": "A-17"})
    response = await run.clarion.notifications.SendNotification(request, timeout=10)
    await dispatcher_for(run.clarion, run.broker).run_once()
    return str(response.notification.notification_id)


async def test_one_notification_reaches_email_push_sms_and_the_inbox(
    pipeline: Callable[..., Any], http_server: FakeHttpServer
) -> None:
    twilio = FakeTwilio(http_server, account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
    run: Pipeline = await pipeline(sms="twilio", twilio_url=twilio.base_url)
    user = await run.clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "four@example.com", "phone_number": "+14155550123"}),
        timeout=10,
    )
    await run.clarion.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": "t1", "platform": "DEVICE_PLATFORM_IOS"}),
        timeout=10,
    )
    notification = await run.settled(await send_everywhere(run, user.user_id), timeout_s=30)
    by_channel = {d.channel: d for d in notification.deliveries}
    assert {c: (d.status, d.provider) for c, d in by_channel.items()} == {
        common_pb2.CHANNEL_EMAIL: (notifications_pb2.DELIVERY_STATUS_SENT, "sendgrid"),
        common_pb2.CHANNEL_PUSH: (notifications_pb2.DELIVERY_STATUS_SENT, "simulated"),
        common_pb2.CHANNEL_SMS: (notifications_pb2.DELIVERY_STATUS_SENT, "twilio"),
        common_pb2.CHANNEL_IN_APP: (notifications_pb2.DELIVERY_STATUS_SENT, "inbox"),
    }
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SENT
    [text] = twilio.messages
    assert (text["to"], text["body"]) == ("+14155550123", "Order A-17 shipped. Track: https://t.example/A-17")
    assert by_channel[common_pb2.CHANNEL_SMS].provider_message_id == text["sid"]
    sms = by_channel[common_pb2.CHANNEL_SMS].sms
    assert (sms.body, sms.segments, sms.encoding) == (text["body"], 1, "GSM-7")

    in_app = by_channel[common_pb2.CHANNEL_IN_APP]
    assert in_app.in_app.action_url == "https://app.example.com/orders/A-17"
    listed = await inbox_pb2_grpc.InboxServiceStub(run.clarion.channel).ListInboxMessages(
        inbox_pb2.ListInboxMessagesRequest(user_id=user.user_id), timeout=10
    )
    [message] = listed.messages
    assert message.message_id == in_app.delivery_id == in_app.provider_message_id
    assert (message.title, message.body, dict(message.data)) == (
        "Order A-17 shipped",
        "It arrives tomorrow.",
        {"order": "A-17"},
    )
    assert message.notification_id == notification.notification_id


async def test_twilio_busy_is_retried_and_a_stop_reply_is_final(
    pipeline: Callable[..., Any], http_server: FakeHttpServer
) -> None:
    twilio = FakeTwilio(http_server, account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN)
    run: Pipeline = await pipeline(sms="twilio", twilio_url=twilio.base_url)
    user_id = await make_user(run.clarion, phone_number="+14155550124")
    twilio.then(twilio_reply(429, 20429, "Too Many Requests", {"Retry-After": "1"}))
    busy = await run.settled(await send_everywhere(run, user_id), timeout_s=30)
    [sms] = [d for d in busy.deliveries if d.channel == common_pb2.CHANNEL_SMS]
    assert sms.status == notifications_pb2.DELIVERY_STATUS_SENT
    assert outcomes(sms) == [TRANSIENT, SUCCEEDED]
    assert "20429" in sms.attempts[0].error

    twilio.then(twilio_reply(400, 21610, "Attempt to send to unsubscribed recipient"))
    request = notifications_pb2.SendNotificationRequest(
        user_id=user_id, template_key="everywhere", channels=[common_pb2.CHANNEL_SMS]
    )
    request.message_data.update({"order": "B-2"})
    sent = await run.clarion.notifications.SendNotification(request, timeout=10)
    await dispatcher_for(run.clarion, run.broker).run_once()
    stopped = await run.settled(sent.notification.notification_id, timeout_s=30)
    [sms] = stopped.deliveries
    assert sms.status == notifications_pb2.DELIVERY_STATUS_FAILED
    assert outcomes(sms) == [PERMANENT]
    assert "21610" in sms.attempts[0].error
    assert "+14155550124" not in sms.attempts[0].error


async def test_texts_go_to_the_outbox_in_local_mode_and_users_can_switch_channels_off(
    pipeline: Callable[..., Any],
) -> None:
    run: Pipeline = await pipeline(sms="file")
    user_id = await make_user(run.clarion, phone_number="+351912345678", preferences={"in_app_enabled": False})
    notification = await run.settled(await send_everywhere(run, user_id), timeout_s=30)
    by_channel = {d.channel: d for d in notification.deliveries}
    sms = by_channel[common_pb2.CHANNEL_SMS]
    assert (sms.status, sms.provider) == (notifications_pb2.DELIVERY_STATUS_SENT, "file")
    written = json.loads((run.outbox / "sms" / f"{sms.delivery_id}.json").read_text())
    assert (written["to"], written["body"]) == ("+351912345678", "Order A-17 shipped. Track: https://t.example/A-17")
    assert by_channel[common_pb2.CHANNEL_IN_APP].status == notifications_pb2.DELIVERY_STATUS_SKIPPED
    assert by_channel[common_pb2.CHANNEL_IN_APP].status_reason == "in_app_disabled_by_user"
    # No address and no device: those two are skipped too, each with its reason.
    assert by_channel[common_pb2.CHANNEL_EMAIL].status_reason == "no_email_address"
    assert by_channel[common_pb2.CHANNEL_PUSH].status_reason == "no_devices"
