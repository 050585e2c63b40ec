"""The dispatcher against real PostgreSQL and real RabbitMQ (and the in-memory broker): deliveries planned at accept
(routing by preference and quiet hours) are published on the right queues with their rendered content, deferred ones
are checked again when they fall due, nothing is lost or doubled, and notifications an earlier release accepted
without deliveries are still planned."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.json_format import MessageToDict
from sqlalchemy import func, select

from clarion.core.broker import Broker, Received, create_broker
from clarion.delivery.lifecycle import NotificationStatus
from clarion.delivery.queues import EMAIL_QUEUE, PUSH_QUEUE, TOPOLOGY
from clarion.delivery.tasks import TASK_CONTENT_TYPE, read_task
from clarion.notifications import models as m
from clarion.notifications.dispatcher import Dispatcher
from clarion.v1 import (
    common_pb2,
    notifications_pb2,
    suppressions_pb2,
    suppressions_pb2_grpc,
    templates_pb2,
    users_pb2,
)
from tests.conftest import free_port
from tests.helpers import notification_row
from tests.integration.conftest import RunningClarion

pytestmark = pytest.mark.integration

TEMPLATE = templates_pb2.Template(
    template_key="digest",
    subject="Hi {name}",
    body="You have {count} updates",
    html_body="<p>{count} updates</p>",
    push_title="Hi {name}",
    push_body="{count} updates",
)
DATA = {"name": "Ada", "count": "3"}


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def drain(broker: Broker, queue: str, *, expect: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    """Consume exactly `expect` messages from `queue` (acking them) and return their DeliveryTasks as dicts (field
    names as in the proto), with the message id and headers."""
    bodies: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def handle(received: Received) -> None:
        message = received.message
        assert message.content_type == TASK_CONTENT_TYPE
        task = MessageToDict(read_task(message), preserving_proto_field_name=True)
        bodies.append({**task, "_message_id": message.message_id, "_headers": dict(message.headers)})
        await received.ack()
        if len(bodies) >= expect:
            done.set()

    await broker.consume(queue, handle, prefetch=10)
    try:
        if expect:
            await asyncio.wait_for(done.wait(), timeout_s)
        else:
            await asyncio.sleep(0.5)
    finally:
        await broker.stop_consuming()
    return bodies


async def make_user(clarion: RunningClarion, **fields: Any) -> str:
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=fields), timeout=10)
    return str(user.user_id)


async def send(clarion: RunningClarion, user_id: str, **fields: Any) -> str:
    request = notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="digest", **fields)
    request.message_data.update(DATA)
    response = await clarion.notifications.SendNotification(request, timeout=10)
    return str(response.notification.notification_id)


async def get(clarion: RunningClarion, notification_id: str) -> notifications_pb2.Notification:
    request = notifications_pb2.GetNotificationRequest(notification_id=notification_id)
    notification: notifications_pb2.Notification = await clarion.notifications.GetNotification(request, timeout=10)
    return notification


def dispatcher_for(clarion: RunningClarion, broker: Broker, clock: Callable[[], datetime] | None = None) -> Dispatcher:
    return Dispatcher(
        fast=clarion.resources.fast,
        clients=clarion.resources.clients,
        broker=broker,
        database_url=str(clarion.resources.engine.url.render_as_string(hide_password=False)),
        clock=clock or (lambda: datetime.now(UTC)),
    )


@pytest.fixture
async def clarion_with_template(clarion: RunningClarion) -> RunningClarion:
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10)
    return clarion


async def test_deliveries_are_written_and_published_with_rendered_content(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="ada@example.com")
    await clarion.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user_id, device={"token": "tok-1", "platform": "DEVICE_PLATFORM_IOS"}),
        timeout=10,
    )
    notification_id = await send(clarion, user_id)
    # Planned and written at accept: the dispatcher only publishes.
    accepted = await get(clarion, notification_id)
    assert accepted.status == notifications_pb2.NOTIFICATION_STATUS_ACCEPTED
    assert [d.status for d in accepted.deliveries] == [notifications_pb2.DELIVERY_STATUS_QUEUED] * 2
    assert await dispatcher_for(clarion, broker).run_once() == (0, 2)

    notification = await get(clarion, notification_id)
    by_channel = {d.channel: d for d in notification.deliveries}
    assert by_channel.keys() == {d.channel for d in accepted.deliveries}
    assert {d.status for d in notification.deliveries} == {notifications_pb2.DELIVERY_STATUS_QUEUED}

    [email] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert email["_message_id"] == by_channel[common_pb2.CHANNEL_EMAIL].delivery_id
    assert email["notification_id"] == notification_id
    assert email["_headers"]["notification_id"] == notification_id
    assert email["_headers"]["request_id"], "the accepting call's x-request-id travels in the headers"
    assert "api_key" not in json.dumps(email)
    assert email["email"]["to"] == "ada@example.com"
    assert email["email"]["subject"] == "Hi Ada"
    assert email["email"]["html_body"] == "<p>3 updates</p>"
    [push] = await drain(broker, PUSH_QUEUE, expect=1)
    assert push["push"]["title"] == "Hi Ada"
    assert [d["token"] for d in push["push"]["devices"]] == ["tok-1"]
    assert await dispatcher_for(clarion, broker).run_once() == (0, 0), "nothing is dispatched or published twice"


async def test_channels_the_user_turned_off_or_cannot_receive_are_skipped(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="bo@example.com", preferences={"email_enabled": False})
    notification_id = await send(clarion, user_id)
    await dispatcher_for(clarion, broker).run_once()
    notification = await get(clarion, notification_id)
    reasons = {d.channel: (d.status, d.status_reason) for d in notification.deliveries}
    assert reasons == {
        1: (notifications_pb2.DELIVERY_STATUS_SKIPPED, "email_disabled_by_user"),
        2: (notifications_pb2.DELIVERY_STATUS_SKIPPED, "no_devices"),
    }
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SKIPPED
    assert await drain(broker, EMAIL_QUEUE, expect=0) == []


async def test_only_the_requested_channels_are_used(clarion_with_template: RunningClarion, broker: Broker) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="cy@example.com")
    notification_id = await send(clarion, user_id, channels=[1])
    await dispatcher_for(clarion, broker).run_once()
    assert [d.channel for d in (await get(clarion, notification_id)).deliveries] == [1]


def quiet_window_around(now: datetime) -> tuple[str, str, datetime]:
    """Quiet hours (in UTC) from an hour before `now` to an hour after, and the instant they end."""
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    ends_at = end.replace(second=0, microsecond=0)
    return f"{start:%H:%M}", f"{end:%H:%M}", ends_at


async def test_quiet_hours_defer_normal_but_not_critical(clarion_with_template: RunningClarion, broker: Broker) -> None:
    clarion = clarion_with_template
    start, end, ends_at = quiet_window_around(datetime.now(UTC))
    user_id = await make_user(
        clarion,
        email_address="di@example.com",
        timezone="UTC",
        preferences={"quiet_hours_start": start, "quiet_hours_end": end, "push_enabled": False},
    )
    normal = await send(clarion, user_id)
    critical = await send(clarion, user_id, priority=notifications_pb2.PRIORITY_CRITICAL)
    held_notification = await get(clarion, normal)
    assert held_notification.status == notifications_pb2.NOTIFICATION_STATUS_ACCEPTED
    held = next(d for d in held_notification.deliveries if d.channel == 1)
    assert (held.status, held.status_reason) == (notifications_pb2.DELIVERY_STATUS_QUEUED, "quiet_hours")
    assert held.due_time.ToDatetime(tzinfo=UTC) == ends_at
    clock = Clock(datetime.now(UTC))
    dispatcher = dispatcher_for(clarion, broker, clock)
    assert await dispatcher.run_once() == (0, 1)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert message["notification_id"] == critical

    clock.now = ends_at - timedelta(minutes=1)
    assert await dispatcher.run_once() == (0, 0)
    clock.now = ends_at
    assert await dispatcher.run_once() == (1, 1), "the window ended: the held delivery is checked and goes out"
    [later] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert later["notification_id"] == normal
    released = await get(clarion, normal)
    assert released.status == notifications_pb2.NOTIFICATION_STATUS_IN_PROGRESS
    assert [d.status_reason for d in released.deliveries if d.channel == 1] == [""]


async def test_a_deferred_delivery_is_checked_again_when_it_falls_due(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    start, end, _ = quiet_window_around(datetime.now(UTC))
    user_id = await make_user(
        clarion,
        email_address="ji@example.com",
        timezone="UTC",
        preferences={"quiet_hours_start": start, "quiet_hours_end": end, "push_enabled": False},
    )
    held = await send(clarion, user_id)
    later = datetime.now(UTC) + timedelta(hours=3)
    scheduled = await send(clarion, user_id, send_at=later)
    assert (await get(clarion, scheduled)).status == notifications_pb2.NOTIFICATION_STATUS_SCHEDULED
    [waiting] = [d for d in (await get(clarion, scheduled)).deliveries if d.channel == 1]
    assert (waiting.status_reason, waiting.due_time.ToDatetime(tzinfo=UTC)) == (
        "scheduled_send",
        later,
    )
    # The user switches email off while both wait: neither goes out.
    switch_off = users_pb2.UpdateUserRequest(
        user={"user_id": user_id, "preferences": {"email_enabled": False}},
        update_mask=field_mask_pb2.FieldMask(paths=["preferences.email_enabled"]),
    )
    await clarion.users.UpdateUser(switch_off, timeout=10)
    dispatcher = dispatcher_for(clarion, broker, Clock(later + timedelta(minutes=1)))
    assert await dispatcher.run_once() == (2, 0)
    for notification_id in (held, scheduled):
        notification = await get(clarion, notification_id)
        [email] = [d for d in notification.deliveries if d.channel == 1]
        assert (email.status, email.status_reason) == (
            notifications_pb2.DELIVERY_STATUS_SKIPPED,
            "email_disabled_by_user",
        )
        assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SKIPPED
    assert await drain(broker, EMAIL_QUEUE, expect=0) == []


async def test_a_scheduled_send_to_an_address_suppressed_meanwhile_is_skipped(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="Later@Example.com")
    later = datetime.now(UTC) + timedelta(hours=1)
    notification_id = await send(clarion, user_id, send_at=later, channels=[1])
    await suppressions_pb2_grpc.SuppressionServiceStub(clarion.channel).CreateSuppression(
        suppressions_pb2.CreateSuppressionRequest(
            suppression={
                "channel": "CHANNEL_EMAIL",
                "address": "later@example.com",
                "reason": "SUPPRESSION_REASON_UNSUBSCRIBE",
            }
        ),
        timeout=10,
    )
    assert await dispatcher_for(clarion, broker, Clock(later)).run_once() == (1, 0)
    notification = await get(clarion, notification_id)
    assert [(d.status, d.status_reason) for d in notification.deliveries] == [
        (notifications_pb2.DELIVERY_STATUS_SKIPPED, "suppressed_unsubscribe")
    ]
    assert await drain(broker, EMAIL_QUEUE, expect=0) == []


async def test_a_scheduled_send_whose_user_is_gone_is_skipped(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="gi@example.com")
    later = datetime.now(UTC) + timedelta(hours=1)
    notification_id = await send(clarion, user_id, send_at=later, channels=[1])
    await clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id=user_id), timeout=10)
    assert await dispatcher_for(clarion, broker, Clock(later)).run_once() == (1, 0)
    notification = await get(clarion, notification_id)
    assert [(d.status, d.status_reason) for d in notification.deliveries] == [
        (notifications_pb2.DELIVERY_STATUS_SKIPPED, "user_not_found")
    ]
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_SKIPPED


async def test_a_dispatcher_that_dies_before_publishing_is_covered_by_the_next_pass(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="ed@example.com")
    notification_id = await send(clarion, user_id, channels=[1])
    # Committed at accept; whatever dispatcher was woken "died" before publishing. The next pass publishes it.
    assert await drain(broker, EMAIL_QUEUE, expect=0) == []
    assert await dispatcher_for(clarion, broker).run_once() == (0, 1)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert message["notification_id"] == notification_id


async def test_two_dispatchers_at_once_never_double_a_delivery(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="fa@example.com")
    ids = [await send(clarion, user_id, channels=[1]) for _ in range(60)]
    first, second = dispatcher_for(clarion, broker), dispatcher_for(clarion, broker)
    for _ in range(5):
        await asyncio.gather(first.run_once(), second.run_once())
    async with clarion.resources.sessions() as session:
        rows = (await session.execute(select(func.count()).select_from(m.DeliveryRow))).scalar_one()
        unpublished = (
            await session.execute(
                select(func.count()).select_from(m.DeliveryRow).where(m.DeliveryRow.published_at.is_(None))
            )
        ).scalar_one()
    assert rows == len(ids)
    assert unpublished == 0
    messages = await drain(broker, EMAIL_QUEUE, expect=len(ids))
    assert sorted(msg["notification_id"] for msg in messages) == sorted(ids)


async def test_publishing_waits_out_a_broker_outage(clarion_with_template: RunningClarion, broker: Broker) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="ho@example.com")
    notification_id = await send(clarion, user_id, channels=[1])
    down = create_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", topology=TOPOLOGY, publish_timeout_s=1)
    assert await dispatcher_for(clarion, down).run_once() == (0, 0), "publishing fails: the delivery waits"
    await down.close()
    assert (await get(clarion, notification_id)).deliveries[0].status == notifications_pb2.DELIVERY_STATUS_QUEUED
    assert await dispatcher_for(clarion, broker).run_once() == (0, 1)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert message["notification_id"] == notification_id


async def legacy_notification(clarion: RunningClarion, user_id: str, data: dict[str, Any]) -> str:
    """A notification as an earlier release accepted it: pending, without deliveries."""
    row = notification_row(user_id=user_id, template_version=0, message_data=data, status=NotificationStatus.ACCEPTED)
    async with clarion.resources.sessions.begin() as session:
        session.add(row)
    return str(row.id)


async def test_a_notification_an_earlier_release_accepted_is_planned_by_the_dispatcher(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="le@example.com")
    gone = await make_user(clarion, email_address="gone@example.com")
    planned = await legacy_notification(clarion, user_id, DATA)
    orphan = await legacy_notification(clarion, gone, DATA)
    await clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id=gone), timeout=10)
    dispatcher = dispatcher_for(clarion, broker)
    assert await dispatcher.run_once(legacy=False) == (0, 0), "looked for only every LEGACY_EVERY passes"
    assert await dispatcher.run_once() == (2, 1)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert (message["notification_id"], message["email"]["subject"]) == (planned, "Hi Ada")
    notification = await get(clarion, orphan)
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_FAILED
    assert list(notification.deliveries) == []
    assert await dispatcher.run_once() == (0, 0), "planned once"


async def test_a_batch_too_large_for_one_answer_is_rendered_one_by_one(
    start_clarion: Callable[..., Any], broker: Broker
) -> None:
    # Ten renders of ~40 KB each do not fit in one 256 KiB answer; each fits alone.
    clarion: RunningClarion = await start_clarion(grpc_max_message_bytes=256 * 1024)
    template = templates_pb2.Template(template_key="digest", subject="Hi {name}", body="{blob}")
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
    user_id = await make_user(clarion, email_address="big@example.com")
    ids = [await legacy_notification(clarion, user_id, {"name": f"n{n}", "blob": "x" * 40_000}) for n in range(10)]
    assert await dispatcher_for(clarion, broker).dispatch_due() == 10
    for notification_id in ids:
        notification = await get(clarion, notification_id)
        assert [d.status for d in notification.deliveries] == [notifications_pb2.DELIVERY_STATUS_QUEUED]
