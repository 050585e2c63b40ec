"""The dispatcher's statements. The deliveries table is the outbox (docs/message-flow.md): a pass checks deferred
deliveries that fell due, then claims due unpublished deliveries and marks the ones it published; every so often it
also plans notifications an earlier release accepted without deliveries. Claims are `FOR UPDATE SKIP LOCKED` in
short transactions, so that several dispatchers never wait on one another."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import asyncpg

from clarion.delivery.lifecycle import PENDING_NOTIFICATION_STATUSES, DeliveryStatus, NotificationStatus, sql
from clarion.delivery.store.outcomes import LOCK_NOTIFICATIONS, refresh_statuses

# The channel NOTIFY'd when there is new work for the dispatcher (an accept, a replay).
DISPATCH_CHANNEL = "clarion_dispatch"
# Why a queued delivery waits (its status_reason until the relay checks it again when it falls due, see
# clarion.delivery.planning): the user's quiet hours, or the notification's send time.
QUIET_HOURS = "quiet_hours"
SCHEDULED = "scheduled_send"
_DEFERRED = f"'{QUIET_HOURS}', '{SCHEDULED}'"


@dataclass(frozen=True, slots=True)
class DueNotification:
    """A notification claimed for dispatch: what planning its deliveries needs."""

    id: uuid.UUID
    user_id: str
    template_key: str
    template_version: int
    message_data: dict[str, Any]
    channels: list[str]
    priority: int
    locale: str
    trace_parent: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Self:
        return cls(
            row["id"],
            row["user_id"],
            row["template_key"],
            row["template_version"],
            json.loads(row["message_data"]),
            list(row["channels"]),
            row["priority"],
            row["locale"],
            row["trace_parent"],
        )


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One channel's delivery as planned (clarion.delivery.planning): QUEUED with its payload and when it is due,
    or SKIPPED with its reason."""

    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    status: DeliveryStatus
    status_reason: str
    payload: dict[str, Any]
    due_at: datetime


def delivery_columns(deliveries: Sequence[NewDelivery]) -> tuple[list[Any], ...]:
    """The deliveries as the seven arrays the INSERT statements unnest: id, notification_id, channel, status,
    reason, payload (JSON text), due_at."""
    return (
        [d.id for d in deliveries],
        [d.notification_id for d in deliveries],
        [d.channel for d in deliveries],
        [d.status for d in deliveries],
        [d.status_reason for d in deliveries],
        [json.dumps(d.payload, separators=(",", ":")) for d in deliveries],
        [d.due_at for d in deliveries],
    )


@dataclass(frozen=True, slots=True)
class Unpublished:
    """A due delivery claimed for publishing, with what its message carries."""

    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    payload: dict[str, Any]
    user_id: str
    trace_request_id: str
    trace_parent: str


# Notifications an earlier release accepted without planning them: pending, and without deliveries.
_CLAIM_DUE = f"""
SELECT id, user_id, template_key, template_version, message_data, channels, priority, locale, trace_parent
FROM notifications n
WHERE status IN ({sql(*PENDING_NOTIFICATION_STATUSES)}) AND send_at <= $1
    AND NOT EXISTS (SELECT FROM deliveries d WHERE d.notification_id = n.id)
ORDER BY send_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

# One delivery per channel however many dispatchers race for a notification (the unique constraint).
_INSERT_DELIVERIES = """
INSERT INTO deliveries (
    id, notification_id, channel, status, status_reason, payload, due_at, published_at, attempt_count, lease_until,
    provider, provider_message_id, sent_at, created_at, updated_at
)
SELECT id, notification_id, channel, status, reason, payload::jsonb, due_at, NULL, 0, NULL, '', '', NULL, $8, $8
FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::varchar[], $5::text[], $6::text[], $7::timestamptz[])
    AS u(id, notification_id, channel, status, reason, payload, due_at)
ON CONFLICT (notification_id, channel) DO NOTHING
"""

# `n.id = ANY($1)` beside the join: without it the planner may join by scanning all of notifications.
_SET_DISPATCHED = """
UPDATE notifications n SET status = u.status, status_reason = u.reason, updated_at = $4
FROM unnest($1::uuid[], $2::varchar[], $3::text[]) AS u(id, status, reason)
WHERE n.id = ANY($1::uuid[]) AND n.id = u.id
"""

_CLAIM_UNPUBLISHED = f"""
SELECT d.id, d.notification_id, d.channel, d.payload, n.user_id, n.trace_request_id, n.trace_parent
FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE d.status = {sql(DeliveryStatus.QUEUED)} AND d.published_at IS NULL AND d.due_at <= $1
    AND d.status_reason NOT IN ({_DEFERRED})
ORDER BY d.due_at
LIMIT $2
FOR UPDATE OF d SKIP LOCKED
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

# Deferred deliveries that fell due, to be checked again before they are published (no lock: record_rechecks
# changes only those still as read).
_DEFERRED_DUE = f"""
SELECT d.id, d.notification_id, d.channel, d.status_reason, n.user_id, n.priority, n.project_id
FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE d.status = {sql(DeliveryStatus.QUEUED)} AND d.published_at IS NULL AND d.due_at <= $1
    AND d.status_reason IN ({_DEFERRED})
ORDER BY d.due_at
LIMIT $2
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

_RECHECK = f"""
UPDATE deliveries d SET status = u.status, status_reason = u.reason, due_at = u.due_at, updated_at = $6
FROM unnest($1::uuid[], $2::varchar[], $3::varchar[], $4::text[], $5::timestamptz[])
    AS u(id, old_reason, status, reason, due_at)
WHERE d.id = u.id AND d.status = {sql(DeliveryStatus.QUEUED)} AND d.published_at IS NULL
    AND d.status_reason = u.old_reason
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

_SET_PUBLISHED = """
UPDATE deliveries SET published_at = $2, status_reason = '', updated_at = $2 WHERE id = ANY($1::uuid[])
"""

# The oldest due delivery not yet published (the dispatcher's lag) and how many dead letters wait.
_BACKLOG = f"""
SELECT
    (SELECT min(due_at) FROM deliveries
     WHERE status = {sql(DeliveryStatus.QUEUED)} AND published_at IS NULL AND due_at <= $1) AS oldest_due,
    (SELECT count(*) FROM deliveries WHERE status = {sql(DeliveryStatus.FAILED)}) AS dead_letters
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input


async def claim_due(connection: asyncpg.Connection, now: datetime, limit: int) -> list[DueNotification]:
    """Lock up to `limit` pending notifications due by `now`, oldest first, skipping those another dispatcher
    holds. Inside the caller's transaction, which then records their dispatch."""
    return [DueNotification.from_row(row) for row in await connection.fetch(_CLAIM_DUE, now, limit)]


async def record_dispatch(
    connection: asyncpg.Connection,
    deliveries: Sequence[NewDelivery],
    notifications: Sequence[tuple[uuid.UUID, NotificationStatus, str]],
    now: datetime,
) -> None:
    """Write the planned deliveries, and each dispatched notification's (id, status, reason)."""
    if deliveries:
        await connection.execute(_INSERT_DELIVERIES, *delivery_columns(deliveries), now)
    if notifications:
        await connection.execute(
            _SET_DISPATCHED,
            [notification_id for notification_id, _, _ in notifications],
            [status for _, status, _ in notifications],
            [reason for _, _, reason in notifications],
            now,
        )


@dataclass(frozen=True, slots=True)
class Deferred:
    """A deferred delivery that fell due."""

    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    reason: str
    user_id: str
    priority: int
    project_id: str = "default"


@dataclass(frozen=True, slots=True)
class Rechecked:
    """What a deferred delivery became when it fell due: QUEUED with no reason (published next), QUEUED with a
    reason and a later due time, or SKIPPED with a reason."""

    deferred: Deferred
    status: DeliveryStatus
    reason: str
    due_at: datetime


async def deferred_due(connection: asyncpg.Connection, now: datetime, limit: int) -> list[Deferred]:
    """Up to `limit` deferred deliveries that fell due by `now`, oldest first."""
    return [
        Deferred(
            row["id"],
            row["notification_id"],
            row["channel"],
            row["status_reason"],
            row["user_id"],
            row["priority"],
            row["project_id"],
        )
        for row in await connection.fetch(_DEFERRED_DUE, now, limit)
    ]


async def record_rechecks(connection: asyncpg.Connection, rechecks: Sequence[Rechecked], now: datetime) -> None:
    """Store what the deferred deliveries became, and their notifications' statuses (a SCHEDULED one is now on its
    way), in one transaction that locks the notifications first (the store's lock order). A delivery changed
    meanwhile (cancelled, say) is left as it is."""
    async with connection.transaction():
        await connection.execute(LOCK_NOTIFICATIONS, sorted({r.deferred.notification_id for r in rechecks}))
        await connection.execute(
            _RECHECK,
            [r.deferred.id for r in rechecks],
            [r.deferred.reason for r in rechecks],
            [r.status for r in rechecks],
            [r.reason for r in rechecks],
            [r.due_at for r in rechecks],
            now,
        )
        await refresh_statuses(connection, {r.deferred.notification_id for r in rechecks}, now)


async def claim_unpublished(connection: asyncpg.Connection, now: datetime, limit: int) -> list[Unpublished]:
    """Lock up to `limit` committed, due, unpublished deliveries, oldest due first, skipping those another
    dispatcher holds. Inside the caller's transaction, which marks those it published (`set_published`)."""
    return [
        Unpublished(
            row["id"],
            row["notification_id"],
            row["channel"],
            json.loads(row["payload"]),
            row["user_id"],
            row["trace_request_id"],
            row["trace_parent"],
        )
        for row in await connection.fetch(_CLAIM_UNPUBLISHED, now, limit)
    ]


async def set_published(connection: asyncpg.Connection, delivery_ids: Sequence[uuid.UUID], now: datetime) -> None:
    """Mark deliveries published (the broker confirmed their messages)."""
    await connection.execute(_SET_PUBLISHED, list(delivery_ids), now)


async def relay_backlog(connection: asyncpg.Connection, now: datetime) -> tuple[datetime | None, int]:
    """(the due time of the oldest due delivery not yet published, or None; how many deliveries failed for good)."""
    row = await connection.fetchrow(_BACKLOG, now)
    return row["oldest_due"], int(row["dead_letters"])
