"""The clients' changes: cancel what has not been handed to a provider, replay what failed for good. Each is one
transaction that locks the notifications first (in id order), then their deliveries: the lock order of the store
(clarion.delivery.store)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from clarion.core.db import utcnow
from clarion.delivery.lifecycle import PENDING_NOTIFICATION_STATUSES, DeliveryStatus, NotificationStatus, sql
from clarion.delivery.store.outcomes import LOCK_NOTIFICATIONS, refresh_statuses
from clarion.delivery.store.relay import DISPATCH_CHANNEL

CANCELLED_BY_CLIENT = "cancelled_by_client"
REPLAYED = "replayed"

# The project in the statement, not checked after: another project's row is never locked.
_LOCK_OWN = "SELECT status FROM notifications WHERE id = $1 AND project_id = $2 FOR UPDATE"

_CANCEL_PENDING = """
UPDATE notifications SET status = $2, status_reason = $3, updated_at = $4 WHERE id = $1
"""

_HAS_DELIVERIES = "SELECT EXISTS (SELECT FROM deliveries WHERE notification_id = $1)"

_CANCEL_DELIVERIES = f"""
UPDATE deliveries SET status = {sql(DeliveryStatus.CANCELLED)}, status_reason = $2, updated_at = $3
WHERE notification_id = $1 AND status IN ({sql(DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)})
RETURNING id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input


async def cancel(connection: asyncpg.Connection, notification_id: uuid.UUID, *, project: str) -> bool | None:
    """Cancel what of `project`'s notification has not been handed to a provider: its queued and retrying
    deliveries, or, for one an earlier release accepted and nobody has planned yet, the whole notification. False
    when nothing could be cancelled; None when the project has no such notification."""
    now = utcnow()
    async with connection.transaction():
        status = await connection.fetchval(_LOCK_OWN, notification_id, project)
        if status is None:
            return None
        if await connection.fetch(_CANCEL_DELIVERIES, notification_id, CANCELLED_BY_CLIENT, now):
            await refresh_statuses(connection, [notification_id], now)
            return True
        if status in PENDING_NOTIFICATION_STATUSES and not await connection.fetchval(_HAS_DELIVERIES, notification_id):
            await connection.execute(
                _CANCEL_PENDING, notification_id, NotificationStatus.CANCELLED, CANCELLED_BY_CLIENT, now
            )
            return True
        return False


# The failed deliveries the filter chooses. What they are chosen by never changes (their channel, and their
# notification's project and user) but their status and its time: _REPLAY checks that again under the locks.
_REPLAYABLE = f"""
SELECT d.id, d.notification_id FROM deliveries d JOIN notifications n ON n.id = d.notification_id
WHERE d.status = {sql(DeliveryStatus.FAILED)} AND n.project_id = $1
    AND (cardinality($2::uuid[]) = 0 OR d.id = ANY($2::uuid[]))
    AND ($3::varchar = '' OR d.channel = $3)
    AND ($4::varchar = '' OR n.user_id = $4)
    AND ($5::timestamptz IS NULL OR d.updated_at >= $5)
LIMIT $6
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

# Under the notifications' locks: a delivery replayed (or otherwise moved on) in between is left.
_REPLAY = f"""
UPDATE deliveries
SET status = {sql(DeliveryStatus.QUEUED)}, status_reason = $2, attempt_count = 0, published_at = NULL,
    lease_until = NULL, due_at = $3, updated_at = $3
WHERE id = ANY($1::uuid[]) AND status = {sql(DeliveryStatus.FAILED)}
RETURNING id, notification_id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input


async def replay(
    connection: asyncpg.Connection,
    *,
    project: str,
    ids: Sequence[uuid.UUID],
    channel: str,
    user_id: str,
    failed_after: datetime | None,
    limit: int,
) -> list[uuid.UUID]:
    """Queue up to `limit` of `project`'s failed deliveries again (fresh attempts, same ids), chosen by id or by
    filter, and wake the dispatchers, whose relay publishes them. Returns their ids (another project's are not
    among them, as if they did not exist)."""
    now = utcnow()
    async with connection.transaction():
        chosen = await connection.fetch(_REPLAYABLE, project, list(ids), channel, user_id, failed_after, limit)
        if not chosen:
            return []
        await connection.execute(LOCK_NOTIFICATIONS, sorted({row["notification_id"] for row in chosen}))
        replayed = await connection.fetch(_REPLAY, [row["id"] for row in chosen], REPLAYED, now)
        if replayed:
            await refresh_statuses(connection, {row["notification_id"] for row in replayed}, now)
            await connection.execute("SELECT pg_notify($1, '')", DISPATCH_CHANNEL)
    return [row["id"] for row in replayed]
