"""The dispatcher against real PostgreSQL and real RabbitMQ (and the in-memory broker): routing by preference and
quiet hours, messages on the right queues with rendered content, and nothing lost or doubled."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from sqlalchemy import func, select, update

from clarion.core.broker import Broker, Received, create_broker
from clarion.delivery.queues import EMAIL_QUEUE, PUSH_QUEUE, TOPOLOGY
from clarion.delivery.tasks import TASK_CONTENT_TYPE, read_task
from clarion.notifications import models as m
from clarion.notifications.dispatcher import Dispatcher
from clarion.v1 import common_pb2, notifications_pb2, templates_pb2, users_pb2
from tests.conftest import free_port
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
    assert await dispatcher_for(clarion, broker).run_once() == (1, 2)

    notification = await get(clarion, notification_id)
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_IN_PROGRESS
    by_channel = {d.channel: d for d in notification.deliveries}
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


async def test_quiet_hours_defer_normal_but_not_critical(clarion_with_template: RunningClarion, broker: Broker) -> None:
    clarion = clarion_with_template
    # 23:00 in Lisbon (winter, UTC+0) is inside 22:00-08:00.
    clock = Clock(datetime(2026, 1, 15, 23, 0, tzinfo=UTC))
    user_id = await make_user(
        clarion,
        email_address="di@example.com",
        timezone="Europe/Lisbon",
        preferences={"quiet_hours_start": "22:00", "quiet_hours_end": "08:00", "push_enabled": False},
    )
    normal = await send(clarion, user_id)
    critical = await send(clarion, user_id, priority=notifications_pb2.PRIORITY_CRITICAL)
    dispatcher = dispatcher_for(clarion, broker, clock)
    async with (
        clarion.resources.sessions.begin() as session
    ):  # accepted at the real time: make them due by the test clock
        await session.execute(update(m.NotificationRow).values(send_at=clock.now - timedelta(minutes=1)))
    assert await dispatcher.run_once() == (2, 1)

    held = next(d for d in (await get(clarion, normal)).deliveries if d.channel == 1)
    assert held.status == notifications_pb2.DELIVERY_STATUS_QUEUED
    assert held.status_reason == "quiet_hours"
    assert held.due_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert message["notification_id"] == critical

    clock.now = datetime(2026, 1, 16, 7, 59, tzinfo=UTC)
    assert await dispatcher.run_once() == (0, 0)
    clock.now = datetime(2026, 1, 16, 8, 0, tzinfo=UTC)
    assert await dispatcher.run_once() == (0, 1), "the window ended: the held delivery goes out"
    [later] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert later["notification_id"] == normal


async def test_a_dispatcher_that_dies_after_commit_is_covered_by_the_next_pass(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="ed@example.com")
    notification_id = await send(clarion, user_id, channels=[1])
    # The first dispatcher commits the deliveries and "dies" before publishing.
    assert await dispatcher_for(clarion, broker).dispatch_due() == 1
    assert await drain(broker, EMAIL_QUEUE, expect=0) == []
    # Another dispatcher (or the same one after a restart) publishes what was committed.
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


async def test_a_deleted_user_fails_the_notification_with_a_reason(
    clarion_with_template: RunningClarion, broker: Broker
) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="gi@example.com")
    notification_id = await send(clarion, user_id)
    await clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id=user_id), timeout=10)
    await dispatcher_for(clarion, broker).run_once()
    notification = await get(clarion, notification_id)
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_FAILED
    assert list(notification.deliveries) == []


async def test_publishing_waits_out_a_broker_outage(clarion_with_template: RunningClarion, broker: Broker) -> None:
    clarion = clarion_with_template
    user_id = await make_user(clarion, email_address="ho@example.com")
    notification_id = await send(clarion, user_id, channels=[1])
    down = create_broker(f"amqp://guest:guest@127.0.0.1:{free_port()}/", topology=TOPOLOGY, publish_timeout_s=1)
    assert await dispatcher_for(clarion, down).run_once() == (1, 0), "accepted work is planned; publishing fails"
    await down.close()
    assert (await get(clarion, notification_id)).deliveries[0].status == notifications_pb2.DELIVERY_STATUS_QUEUED
    assert await dispatcher_for(clarion, broker).run_once() == (0, 1)
    [message] = await drain(broker, EMAIL_QUEUE, expect=1)
    assert message["notification_id"] == notification_id


async def test_a_batch_too_large_for_one_answer_is_rendered_one_by_one(
    start_clarion: Callable[..., Any], broker: Broker
) -> None:
    # Ten renders of ~40 KB each do not fit in one 256 KiB answer; each fits alone.
    clarion: RunningClarion = await start_clarion(grpc_max_message_bytes=256 * 1024)
    template = templates_pb2.Template(template_key="digest", subject="Hi {name}", body="{blob}")
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=template), timeout=10)
    user_id = await make_user(clarion, email_address="big@example.com")
    ids = []
    for n in range(10):
        request = notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="digest")
        request.message_data.update({"name": f"n{n}", "blob": "x" * 40_000})
        ids.append((await clarion.notifications.SendNotification(request, timeout=10)).notification.notification_id)
    assert await dispatcher_for(clarion, broker).dispatch_due() == 10
    for notification_id in ids:
        notification = await get(clarion, notification_id)
        assert [d.status for d in notification.deliveries] == [notifications_pb2.DELIVERY_STATUS_QUEUED]
