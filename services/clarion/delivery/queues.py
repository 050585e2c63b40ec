"""The delivery core's queues: each channel's work queue (clarion.delivery.channels) and one dead-letter queue,
declared by the broker (a transport that knows no queue of its own, clarion.core.broker) from TOPOLOGY. A worker in
any language consumes a channel's queue: each message is a `clarion.v1.DeliveryTask`
(protos/clarion/v1/delivery_task.proto)."""

from __future__ import annotations

from collections.abc import Mapping

from clarion.core.broker import Topology
from clarion.delivery.channels import CHANNELS

FAILED_QUEUE = "failed.queue"
# The work queue of each channel.
CHANNEL_QUEUES: Mapping[str, str] = {name: channel.queue for name, channel in CHANNELS.items()}
EMAIL_QUEUE = CHANNEL_QUEUES["email"]
PUSH_QUEUE = CHANNEL_QUEUES["push"]
TOPOLOGY = Topology(work_queues=tuple(CHANNEL_QUEUES.values()), dead_letter_queue=FAILED_QUEUE)
