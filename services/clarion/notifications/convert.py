"""Notifications and deliveries as the API shows them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import struct_pb2

from clarion.delivery.channels import CHANNELS as REGISTRY
from clarion.delivery.lifecycle import AttemptOutcome, DeliveryStatus, NotificationStatus
from clarion.delivery.store import (
    AttemptRecord,
    DeadLetterRecord,
    DeliveryRecord,
    DeliveryStats,
    NotificationView,
    StatsGroup,
)
from clarion.v1 import common_pb2, notifications_pb2

# Stored channel names to clarion.v1.Channel values and back, from the channel registry.
CHANNELS = {name: channel.proto for name, channel in REGISTRY.items()}
CHANNEL_NAMES = {channel.proto: name for name, channel in REGISTRY.items()}


def delivery_to_proto(
    row: DeliveryRecord, attempts: list[AttemptRecord], payload: dict[str, Any] | None = None
) -> notifications_pb2.Delivery:
    """One channel's delivery with its attempts, and with its stored `payload` the content it sends."""
    delivery = notifications_pb2.Delivery(
        delivery_id=str(row.id),
        channel=CHANNELS[row.channel],
        status=DeliveryStatus.proto_of(row.status),
        status_reason=row.status_reason,
        provider=row.provider,
        provider_message_id=row.provider_message_id,
    )
    delivery.due_time.FromDatetime(row.due_at)
    if row.sent_at is not None:
        delivery.sent_time.FromDatetime(row.sent_at)
    for attempt in attempts:
        shown = delivery.attempts.add(
            attempt_number=attempt.attempt_number,
            provider=attempt.provider,
            outcome=AttemptOutcome.proto_of(attempt.outcome),
            error=attempt.error,
        )
        shown.start_time.FromDatetime(attempt.started_at)
        shown.duration.FromMilliseconds(int(attempt.duration_ms))
    channel = REGISTRY.get(row.channel)
    rendered = channel.rendered(payload) if channel is not None and payload else None
    if channel is not None and rendered is not None:
        getattr(delivery, channel.content).CopyFrom(rendered)
    return delivery


def notification_to_proto(view: NotificationView) -> notifications_pb2.Notification:
    """A notification with every delivery and attempt."""
    row = view.notification
    data = struct_pb2.Struct()
    data.update(row.message_data)
    notification = notifications_pb2.Notification(
        name=f"notifications/{row.id}",
        notification_id=str(row.id),
        user_id=row.user_id,
        template_key=row.template_key,
        template_version=row.template_version,
        message_data=data,
        channels=[CHANNELS[c] for c in row.channels],
        priority=row.priority,  # type: ignore[arg-type]
        status=NotificationStatus.proto_of(row.status),
        locale=row.locale,
        request_id=row.request_id or "",
        deliveries=[
            delivery_to_proto(d, view.attempts.get(d.id, []), view.payloads.get(d.id)) for d in view.deliveries
        ],
    )
    notification.send_at.FromDatetime(row.send_at)
    notification.create_time.FromDatetime(row.created_at)
    notification.update_time.FromDatetime(row.updated_at)
    return notification


def dead_letter_to_proto(letter_record: DeadLetterRecord) -> notifications_pb2.DeadLetter:
    """A failed delivery as ListDeadLetters shows it."""
    delivery = letter_record.delivery
    letter = notifications_pb2.DeadLetter(
        delivery_id=str(delivery.id),
        notification_id=str(delivery.notification_id),
        user_id=letter_record.user_id,
        template_key=letter_record.template_key,
        channel=CHANNELS[delivery.channel],
        reason=delivery.status_reason,
        attempt_count=delivery.attempt_count,
        provider=delivery.provider,
    )
    letter.fail_time.FromDatetime(delivery.updated_at)
    return letter


def _stats_group_to_proto(group: StatsGroup) -> notifications_pb2.DeliveryStatsGroup:
    proto = notifications_pb2.DeliveryStatsGroup(
        channel=CHANNELS.get(group.channel, common_pb2.CHANNEL_UNSPECIFIED),
        provider=group.provider,
        total=group.total,
        success_rate=group.success_rate,
    )
    # One count field per delivery status, named as the status is stored (`queued`, `sent`, `cancelled`...).
    for status, count in group.counts.items():
        setattr(proto, status, count)
    if group.time_to_send_p50_s is not None:
        proto.time_to_send_p50.FromTimedelta(timedelta(seconds=group.time_to_send_p50_s))
    if group.time_to_send_p95_s is not None:
        proto.time_to_send_p95.FromTimedelta(timedelta(seconds=group.time_to_send_p95_s))
    return proto


def stats_to_proto(stats: DeliveryStats) -> notifications_pb2.DeliveryStats:
    """Delivery statistics as GetDeliveryStats answers them."""
    proto = notifications_pb2.DeliveryStats(
        totals=_stats_group_to_proto(stats.totals),
        channels=[_stats_group_to_proto(g) for g in stats.channels],
        providers=[_stats_group_to_proto(g) for g in stats.providers],
    )
    proto.start_time.FromDatetime(stats.start)
    proto.end_time.FromDatetime(stats.end)
    return proto
