"""The work queues' messages: a clarion.v1.DeliveryTask (protos/clarion/v1/delivery_task.proto) built from a
delivery's stored payload, and the delivery id read back from a message, whichever format it came in.

Upgrading from a release that published JSON: workers of that release cannot read a DeliveryTask, so run the
dispatcher with CLARION_DELIVERY_TASK_FORMAT=json until every worker runs this release (they read both), then drop
the setting."""

from __future__ import annotations

import json
import uuid
from typing import Any

from google.protobuf.message import DecodeError

from clarion.core.broker import Message
from clarion.delivery.channels import CHANNELS
from clarion.v1 import delivery_task_pb2

TASK_MEDIA_TYPE = "application/x-protobuf"
TASK_CONTENT_TYPE = f"{TASK_MEDIA_TYPE}; proto=clarion.v1.DeliveryTask"
# What the dispatcher published before the contract existed (a JSON object with `delivery_id`): read still, so the
# messages in flight across an upgrade are delivered.
LEGACY_CONTENT_TYPE = "application/json"


class UnreadableTask(ValueError):
    """A message on a work queue that names no delivery."""


def task_message(
    *,
    delivery_id: str,
    notification_id: str,
    user_id: str,
    channel: str,
    payload: dict[str, Any],
    headers: dict[str, str],
    format: str = "protobuf",
) -> Message:
    """The message that asks `channel`'s workers to deliver `delivery_id`: a DeliveryTask with the content as
    stored in the delivery's payload (the dispatcher's plan), or, with `format` "json", the JSON object of earlier
    releases."""
    if format == "json":
        body = {"delivery_id": delivery_id, "notification_id": notification_id, "channel": channel, "payload": payload}
        return Message(
            message_id=delivery_id,
            body=json.dumps(body, separators=(",", ":")).encode(),
            headers=headers,
            content_type=LEGACY_CONTENT_TYPE,
        )
    task = delivery_task_pb2.DeliveryTask(
        delivery_id=delivery_id,
        notification_id=notification_id,
        user_id=user_id,
        channel=CHANNELS[channel].proto,
        locale=str(payload.get("locale", "")),
    )
    CHANNELS[channel].fill_task(task, payload)
    return Message(
        message_id=delivery_id, body=task.SerializeToString(), headers=headers, content_type=TASK_CONTENT_TYPE
    )


def read_task(message: Message) -> delivery_task_pb2.DeliveryTask:
    """The task a work-queue message carries: a DeliveryTask, or (from before the contract) a JSON object whose
    `delivery_id` is all that is read. UnreadableTask when it names no delivery."""
    if message.content_type.split(";", 1)[0].strip().lower() == TASK_MEDIA_TYPE:
        try:
            task = delivery_task_pb2.DeliveryTask.FromString(message.body)
        except DecodeError:
            raise UnreadableTask("not a DeliveryTask") from None
    else:
        try:
            task = delivery_task_pb2.DeliveryTask(delivery_id=str(json.loads(message.body)["delivery_id"]))
        except (ValueError, KeyError, TypeError):
            raise UnreadableTask("neither a DeliveryTask nor a JSON object with delivery_id") from None
    try:
        uuid.UUID(task.delivery_id)
    except ValueError:
        raise UnreadableTask(f"delivery_id {task.delivery_id[:64]!r} is not a UUID") from None
    return task
