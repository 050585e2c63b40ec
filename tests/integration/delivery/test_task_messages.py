"""The work queues' messages as a consumer in another language sees them: plain AMQP from real RabbitMQ, a
clarion.v1.DeliveryTask body decoded with nothing but the contract."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from clarion.core.broker import create_broker
from clarion.delivery.queues import TOPOLOGY
from clarion.delivery.tasks import TASK_CONTENT_TYPE
from clarion.v1 import common_pb2, delivery_task_pb2, templates_pb2, users_pb2
from tests.integration.conftest import RABBITMQ_URL, RunningClarion
from tests.integration.notifications.test_dispatcher import TEMPLATE, dispatcher_for, send

pytestmark = pytest.mark.integration


async def test_each_channel_queue_carries_delivery_tasks_any_amqp_client_can_read(clarion: RunningClarion) -> None:
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=TEMPLATE), timeout=10)
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "task@example.com"}), timeout=10
    )
    device = {"token": "fcm:task-device", "platform": "DEVICE_PLATFORM_IOS"}
    await clarion.users.AddDevice(users_pb2.AddDeviceRequest(user_id=user.user_id, device=device), timeout=10)
    notification_id = await send(clarion, user.user_id)
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    broker = create_broker(RABBITMQ_URL, topology=TOPOLOGY, namespace=namespace)
    await broker.connect()
    try:
        dispatcher = dispatcher_for(clarion, broker)
        assert await dispatcher.publish_due() == 2
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            tasks = {}
            for queue_name in ("email.queue", "push.queue"):
                queue = await channel.get_queue(f"{namespace}.{queue_name}", ensure=False)
                incoming = await queue.get(timeout=10, fail=True)
                assert incoming is not None
                assert incoming.content_type == TASK_CONTENT_TYPE
                task = delivery_task_pb2.DeliveryTask.FromString(incoming.body)
                assert incoming.message_id == task.delivery_id
                tasks[task.channel] = task
                await incoming.ack()
    finally:
        await broker.delete_topology()  # type: ignore[attr-defined]
        await broker.close()
    email, push = tasks[common_pb2.CHANNEL_EMAIL], tasks[common_pb2.CHANNEL_PUSH]
    assert {email.notification_id, push.notification_id} == {notification_id}
    assert {email.user_id, push.user_id} == {user.user_id}
    assert (email.email.to, email.email.subject, email.email.body) == (
        "task@example.com",
        "Hi Ada",
        "You have 3 updates",
    )
    assert email.email.html_body == "<p>3 updates</p>"
    assert [(d.token, d.platform) for d in push.push.devices] == [("fcm:task-device", users_pb2.DEVICE_PLATFORM_IOS)]
    assert (push.push.title, push.push.body) == ("Hi Ada", "3 updates")
