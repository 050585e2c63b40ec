"""SendGrid's signed Event Webhook through the real edge: events signed here with a key pair made for the test (as
SendGrid signs them), posted without an API key to /v1/providers/sendgrid/events, each applied once: deliveries
move to DELIVERED, BOUNCED or DROPPED, hard bounces and spam reports suppress the address, and the next send to it
is skipped."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.provider_events.apply import apply_pending
from clarion.v1 import (
    common_pb2,
    notifications_pb2,
    suppressions_pb2,
    suppressions_pb2_grpc,
    templates_pb2,
    users_pb2,
)
from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import RestClient, RunningGateway

pytestmark = pytest.mark.integration

PATH = "/v1/providers/sendgrid/events"
D = notifications_pb2


class SendGrid:
    """Signs event batches as SendGrid's Signed Event Webhook does."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, *, at: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "content-type": "application/json",
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": stamp,
        }

    async def post(self, rest: RestClient, events: list[dict[str, Any]], **kwargs: Any) -> Any:
        body = json.dumps(events).encode()
        return await rest.with_key(None).request("POST", PATH, body=body, headers=self.headers(body, **kwargs))


def event(kind: str, delivery_id: str, email: str, **fields: Any) -> dict[str, Any]:
    """One event as SendGrid posts it, with the custom_args Clarion sends (`delivery_id`) at the top level."""
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": uuid.uuid4().hex,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "delivery_id": delivery_id,
        **fields,
    }


@pytest.fixture
async def sendgrid() -> SendGrid:
    return SendGrid()


@pytest.fixture
async def running(
    start_clarion: Callable[..., Awaitable[RunningClarion]],
    start_gateway: Callable[..., Awaitable[RunningGateway]],
    sendgrid: SendGrid,
) -> tuple[RunningClarion, RestClient]:
    clarion = await start_clarion(sendgrid_webhook_public_key=sendgrid.public_key)
    gateway = await start_gateway(int(clarion.address.rsplit(":", 1)[1]), api_key=clarion.api_key)
    await clarion.templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(template={"template_key": "mail", "subject": "Hi", "body": "Body"}),
        timeout=10,
    )
    return clarion, gateway.rest


async def sent_email(clarion: RunningClarion, address: str) -> tuple[str, str]:
    """A notification whose email the provider accepted (the worker's part, written as it writes it): its id and
    the delivery's."""
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user={"email_address": address}), timeout=10)
    sent = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="mail"), timeout=10
    )
    [delivery] = sent.notification.deliveries
    async with clarion.resources.fast.connection() as connection:
        await connection.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = now(), provider = 'sendgrid' WHERE id = $1",
            uuid.UUID(delivery.delivery_id),
        )
        await connection.execute(
            "UPDATE notifications SET status = 'sent' WHERE id = $1", uuid.UUID(sent.notification.notification_id)
        )
    return sent.notification.notification_id, delivery.delivery_id


async def get(clarion: RunningClarion, notification_id: str) -> notifications_pb2.Notification:
    return await clarion.notifications.GetNotification(  # type: ignore[no-any-return]
        notifications_pb2.GetNotificationRequest(notification_id=notification_id), timeout=10
    )


async def test_a_signed_batch_moves_deliveries_suppresses_and_counts_once(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid
) -> None:
    clarion, rest = running
    delivered_n, delivered = await sent_email(clarion, "ok@example.com")
    bounced_n, bounced = await sent_email(clarion, "Gone@Example.com")
    spam_n, spam = await sent_email(clarion, "angry@example.com")
    batch = [
        event("processed", delivered, "ok@example.com"),
        event("delivered", delivered, "ok@example.com", response="250 OK"),
        event("open", delivered, "ok@example.com", useragent="Mozilla/5.0"),
        event("bounce", bounced, "gone@example.com", type="bounce", reason="550 5.1.1 user unknown"),
        event("delivered", spam, "angry@example.com"),
        event("spamreport", spam, "angry@example.com"),
        event("delivered", str(uuid.uuid4()), "stranger@example.com"),  # not a delivery of Clarion's
        {"event": "delivered"},  # not a SendGrid event at all
    ]
    response = await sendgrid.post(rest, batch)
    assert response.status == 200, response.body
    assert response.json() == {"received": 8, "duplicates": 0, "applied": 4, "unmatched": 2}

    assert [(d.status, d.status_reason) for d in (await get(clarion, delivered_n)).deliveries] == [
        (D.DELIVERY_STATUS_DELIVERED, "delivered")
    ]
    bounced_view = await get(clarion, bounced_n)
    assert [(d.status, d.status_reason) for d in bounced_view.deliveries] == [(D.DELIVERY_STATUS_BOUNCED, "bounce")]
    assert bounced_view.status == D.NOTIFICATION_STATUS_FAILED
    assert (await get(clarion, spam_n)).deliveries[0].status == D.DELIVERY_STATUS_DELIVERED

    listed = await suppressions_pb2_grpc.SuppressionServiceStub(clarion.channel).ListSuppressions(
        suppressions_pb2.ListSuppressionsRequest(), timeout=10
    )
    assert {(s.address, s.reason) for s in listed.suppressions} == {
        ("gone@example.com", suppressions_pb2.SUPPRESSION_REASON_HARD_BOUNCE),
        ("angry@example.com", suppressions_pb2.SUPPRESSION_REASON_SPAM_REPORT),
    }

    # SendGrid posts the batch again (a retry): nothing changes twice.
    again = await sendgrid.post(rest, batch)
    assert again.json() == {"received": 8, "duplicates": 7, "applied": 0, "unmatched": 1}

    # The next email to the bounced address is skipped, with its reason.
    user = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=bounced_view.user_id), timeout=10)
    next_send = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="mail"), timeout=10
    )
    [skipped] = next_send.notification.deliveries
    assert (skipped.channel, skipped.status, skipped.status_reason) == (
        common_pb2.CHANNEL_EMAIL,
        D.DELIVERY_STATUS_SKIPPED,
        "suppressed_hard_bounce",
    )

    stats = await clarion.notifications.GetDeliveryStats(D.GetDeliveryStatsRequest(), timeout=10)
    assert (stats.totals.delivered, stats.totals.bounced) == (2, 1)
    assert stats.totals.success_rate == pytest.approx(2 / 3)


async def test_a_late_delivered_does_not_undo_a_bounce_and_a_block_does_not_suppress(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid
) -> None:
    clarion, rest = running
    notification_id, delivery = await sent_email(clarion, "soft@example.com")
    now = int(time.time())
    blocked = event("bounce", delivery, "soft@example.com", type="blocked", timestamp=now)
    late = event("delivered", delivery, "soft@example.com", timestamp=now + 1)
    assert (await sendgrid.post(rest, [late, blocked])).status == 200
    [view] = (await get(clarion, notification_id)).deliveries
    # Applied in the order they happened: delivered, then the block; a block is a soft bounce.
    assert (view.status, view.status_reason) == (D.DELIVERY_STATUS_BOUNCED, "blocked")
    listed = await suppressions_pb2_grpc.SuppressionServiceStub(clarion.channel).ListSuppressions(
        suppressions_pb2.ListSuppressionsRequest(), timeout=10
    )
    assert not listed.suppressions


@pytest.mark.parametrize(
    "tamper",
    ["body", "signature", "old", "missing"],
)
async def test_an_unsigned_or_stale_post_is_refused_and_changes_nothing(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid, tamper: str
) -> None:
    clarion, rest = running
    notification_id, delivery = await sent_email(clarion, "victim@example.com")
    body = json.dumps([event("bounce", delivery, "victim@example.com", type="bounce")]).encode()
    headers = sendgrid.headers(body, at=time.time() - 3600 if tamper == "old" else None)
    if tamper == "body":
        body = body.replace(b"victim", b"attack")
    elif tamper == "signature":
        headers["x-twilio-email-event-webhook-signature"] = base64.b64encode(b"0" * 70).decode()
    elif tamper == "missing":
        del headers["x-twilio-email-event-webhook-signature"]
    response = await rest.with_key(None).request("POST", PATH, body=body, headers=headers)
    assert response.status == 401, response.body
    assert response.json()["details"][0]["reason"].startswith("PROVIDER_SIGNATURE_")
    assert (await get(clarion, notification_id)).deliveries[0].status == D.DELIVERY_STATUS_SENT


async def test_without_a_key_configured_the_endpoint_refuses(
    clarion: RunningClarion, start_gateway: Callable[..., Awaitable[RunningGateway]], sendgrid: SendGrid
) -> None:
    gateway = await start_gateway(int(clarion.address.rsplit(":", 1)[1]))
    response = await sendgrid.post(gateway.rest, [])
    assert response.status == 400
    assert response.json()["details"][0]["reason"] == "PROVIDER_EVENTS_NOT_CONFIGURED"


async def test_a_spam_report_on_its_own_suppresses_the_address(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid
) -> None:
    clarion, rest = running
    _, delivery = await sent_email(clarion, "later@example.com")
    # Days later, in a batch of its own: nothing moves, the address is suppressed in the delivery's project.
    response = await sendgrid.post(rest, [event("spamreport", delivery, "Later@Example.com")])
    assert response.json() == {"received": 1, "duplicates": 0, "applied": 1, "unmatched": 0}
    listed = await suppressions_pb2_grpc.SuppressionServiceStub(clarion.channel).ListSuppressions(
        suppressions_pb2.ListSuppressionsRequest(), timeout=10
    )
    assert [(s.address, s.reason) for s in listed.suppressions] == [
        ("later@example.com", suppressions_pb2.SUPPRESSION_REASON_SPAM_REPORT)
    ]


@pytest.mark.parametrize("stamp", ["9" * 400, "1" * 5000, "²", "-1", "17e9"])
async def test_a_timestamp_that_is_no_time_is_refused_as_unauthenticated(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid, stamp: str
) -> None:
    _, rest = running
    body = b"[]"
    headers = {**sendgrid.headers(body), "x-twilio-email-event-webhook-timestamp": stamp}
    response = await rest.with_key(None).request("POST", PATH, body=body, headers=headers)
    assert response.status == 401, response.body
    assert response.json()["details"][0]["reason"] == "PROVIDER_SIGNATURE_EXPIRED"


async def test_an_event_that_comes_before_its_delivery_is_sent_is_applied_later(
    running: tuple[RunningClarion, RestClient], sendgrid: SendGrid
) -> None:
    clarion, rest = running
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "early@example.com"}), timeout=10
    )
    sent = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="mail"), timeout=10
    )
    [delivery] = sent.notification.deliveries
    # SendGrid reports `delivered` while the worker has not recorded SENT yet: kept, not applied.
    response = await sendgrid.post(rest, [event("delivered", delivery.delivery_id, "early@example.com")])
    assert response.json() == {"received": 1, "duplicates": 0, "applied": 0, "unmatched": 0}
    async with clarion.resources.fast.connection() as connection:
        await connection.execute(
            "UPDATE deliveries SET status = 'sent', sent_at = now(), provider = 'sendgrid' WHERE id = $1",
            uuid.UUID(delivery.delivery_id),
        )
        # The sweeper looks again at events a few seconds old: make this one so.
        await connection.execute("UPDATE provider_events SET received_at = now() - interval '10 seconds'")
        assert await apply_pending(connection) == 1
        assert await apply_pending(connection) == 0  # applied once
    [view] = (await get(clarion, sent.notification.notification_id)).deliveries
    assert (view.status, view.status_reason) == (D.DELIVERY_STATUS_DELIVERED, "delivered")
