"""The work queues' message format: a clarion.v1.DeliveryTask built from a delivery's stored payload, read back by
the workers; the JSON of earlier releases still read; anything else refused."""

from __future__ import annotations

import json
import uuid

import pytest

from clarion.core.broker import Message
from clarion.delivery.tasks import TASK_CONTENT_TYPE, UnreadableTask, read_task, task_message
from clarion.v1 import common_pb2, delivery_task_pb2, users_pb2

DELIVERY, NOTIFICATION, USER = str(uuid.uuid4()), str(uuid.uuid4()), "user-7"


def test_an_email_task_carries_the_rendered_email() -> None:
    payload = {"to": "ada@example.com", "subject": "Hi", "body": "Hello", "html_body": "<p>Hello</p>", "locale": "en"}
    message = task_message(
        delivery_id=DELIVERY,
        notification_id=NOTIFICATION,
        user_id=USER,
        channel="email",
        payload=payload,
        headers={"a": "b"},
    )
    assert (message.message_id, message.content_type, dict(message.headers)) == (
        DELIVERY,
        TASK_CONTENT_TYPE,
        {"a": "b"},
    )
    # As a consumer in another language reads it: the bytes and the contract, nothing of ours.
    task = delivery_task_pb2.DeliveryTask.FromString(message.body)
    assert (task.delivery_id, task.notification_id, task.user_id, task.channel, task.locale) == (
        DELIVERY,
        NOTIFICATION,
        USER,
        common_pb2.CHANNEL_EMAIL,
        "en",
    )
    assert task.WhichOneof("content") == "email"
    assert (task.email.to, task.email.subject, task.email.body, task.email.html_body) == (
        "ada@example.com",
        "Hi",
        "Hello",
        "<p>Hello</p>",
    )
    assert read_task(message) == task


def test_a_push_task_carries_every_device_and_the_data() -> None:
    payload = {
        "devices": [
            {"device_id": "d1", "token": "t1", "platform": "android"},
            {"device_id": "d2", "token": "t2", "platform": "ios"},
            {"device_id": "d3", "token": "t3", "platform": "toaster"},
        ],
        "title": "Order",
        "body": "Shipped",
        "data": {"order": "42", "count": 3},
    }
    message = task_message(
        delivery_id=DELIVERY, notification_id=NOTIFICATION, user_id=USER, channel="push", payload=payload, headers={}
    )
    task = read_task(message)
    assert task.channel == common_pb2.CHANNEL_PUSH
    assert [(d.device_id, d.token, d.platform) for d in task.push.devices] == [
        ("d1", "t1", users_pb2.DEVICE_PLATFORM_ANDROID),
        ("d2", "t2", users_pb2.DEVICE_PLATFORM_IOS),
        ("d3", "t3", users_pb2.DEVICE_PLATFORM_UNSPECIFIED),
    ]
    assert (task.push.title, task.push.body, dict(task.push.data)) == (
        "Order",
        "Shipped",
        {"order": "42", "count": "3"},
    )


def test_while_old_workers_run_the_dispatcher_can_publish_what_they_read() -> None:
    payload = {"to": "ada@example.com", "subject": "Hi"}
    message = task_message(
        delivery_id=DELIVERY,
        notification_id=NOTIFICATION,
        user_id=USER,
        channel="email",
        payload=payload,
        headers={},
        format="json",
    )
    # What a worker of the earlier release does with it.
    assert message.content_type == "application/json"
    old = json.loads(message.body)
    assert (old["delivery_id"], old["notification_id"], old["channel"], old["payload"]) == (
        DELIVERY,
        NOTIFICATION,
        "email",
        payload,
    )
    assert read_task(message).delivery_id == DELIVERY


@pytest.mark.parametrize(
    "content_type", ["application/x-protobuf", "Application/X-Protobuf ; proto=clarion.v1.DeliveryTask"]
)
def test_the_content_type_is_read_as_a_media_type(content_type: str) -> None:
    body = delivery_task_pb2.DeliveryTask(delivery_id=DELIVERY).SerializeToString()
    assert read_task(Message(DELIVERY, body, content_type=content_type)).delivery_id == DELIVERY


def test_the_json_of_earlier_releases_is_still_read() -> None:
    body = json.dumps({"delivery_id": DELIVERY, "notification_id": NOTIFICATION, "channel": "email", "payload": {}})
    assert read_task(Message(DELIVERY, body.encode())).delivery_id == DELIVERY


@pytest.mark.parametrize(
    "message",
    [
        Message("x", b"\xff\xfe not protobuf", content_type=TASK_CONTENT_TYPE),
        Message(
            "x", delivery_task_pb2.DeliveryTask(delivery_id="nope").SerializeToString(), content_type=TASK_CONTENT_TYPE
        ),
        Message("x", b"", content_type=TASK_CONTENT_TYPE),
        Message("x", b'{"id": 1}'),
        Message("x", b"[1, 2]"),
        Message("x", b"not json"),
        Message("x", b'{"delivery_id": "1; DROP TABLE"}'),
    ],
)
def test_a_message_that_names_no_delivery_is_unreadable(message: Message) -> None:
    with pytest.raises(UnreadableTask):
        read_task(message)
