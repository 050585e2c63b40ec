"""Recording what happened to deliveries: claims, attempts and final states. A worker's concurrent handlers share
each statement (core.batching.GroupCommit), on the plain asyncpg pool: a claim is one statement for a batch, an
outcome one short transaction for a batch."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import utcnow
from clarion.notifications import models as m
from clarion.notifications.status import derive_status


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker now owns until `lease_until`."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    user_id: str
    channel: str
    attempt: int
    payload: dict[str, Any]
    # When the notification was accepted: the start of its time to send.
    accepted_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider call, for the attempt log."""

    provider: str
    outcome: str  # "succeeded" | "transient_failure" | "permanent_failure"
    error: str
    started_at: datetime
    duration_ms: float


_CLAIM = """
WITH claimed AS (
    UPDATE deliveries
    SET status = 'sending', attempt_count = attempt_count + 1, lease_until = $2, updated_at = $3
    WHERE id = ANY($1::uuid[]) AND status IN ('queued', 'retrying')
    RETURNING id, notification_id, channel, attempt_count, payload
)
SELECT c.id, c.notification_id, n.user_id, c.channel, c.attempt_count, c.payload, n.created_at
FROM claimed c JOIN notifications n ON n.id = c.notification_id
"""


async def claim_many(
    connection: asyncpg.Connection, delivery_ids: list[uuid.UUID], *, lease_s: float
) -> list[Claimed | None]:
    """QUEUED/RETRYING → SENDING with attempt + 1 and a lease, for a batch in one statement; None for a delivery
    already handled (or being handled under a live lease): that is how a duplicate message is recognised and
    dropped. An id twice in the batch is claimed once: the second gets None."""
    now = utcnow()
    # Sorted, for the usual index scan to lock in id order. Overlapping batches (duplicate messages in two
    # workers) could still deadlock on another plan: PostgreSQL then fails one batch, whose messages are requeued.
    rows = await connection.fetch(_CLAIM, sorted(set(delivery_ids)), now + timedelta(seconds=lease_s), now)
    claimed = {
        row["id"]: Claimed(
            row["id"],
            row["notification_id"],
            row["user_id"],
            row["channel"],
            row["attempt_count"],
            json.loads(row["payload"]),
            row["created_at"],
        )
        for row in rows
    }
    return [claimed.pop(delivery_id, None) for delivery_id in delivery_ids]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery: its attempts and its new status (SENT, FAILED or RETRYING)."""

    claimed: Claimed
    attempts: list[Attempt]
    status: str
    reason: str = ""
    provider: str = ""
    provider_message_id: str = ""
    # The payload to store instead of the claimed one (a push remembers which devices are done).
    payload: dict[str, Any] | None = None


_LOCK_NOTIFICATIONS = "SELECT id FROM notifications WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

_INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, attempt_number, provider, outcome, error, started_at, duration_ms)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::varchar[], $4::varchar[], $5::text[], $6::timestamptz[],
                     $7::float8[])
"""

_UPDATE_DELIVERIES = """
UPDATE deliveries d
SET status = u.status, status_reason = u.reason, updated_at = $7, lease_until = NULL,
    provider = coalesce(nullif(u.provider, ''), d.provider),
    provider_message_id = coalesce(nullif(u.message_id, ''), d.provider_message_id),
    sent_at = CASE WHEN u.status = 'sent' THEN $7 ELSE d.sent_at END,
    payload = coalesce(u.payload::jsonb, d.payload)
FROM unnest($1::uuid[], $2::varchar[], $3::text[], $4::varchar[], $5::text[], $6::text[])
    AS u(id, status, reason, provider, message_id, payload)
WHERE d.id = u.id
"""

_DELIVERY_STATUSES = """
SELECT notification_id, array_agg(status) AS statuses FROM deliveries
WHERE notification_id = ANY($1::uuid[]) GROUP BY notification_id
"""

# `n.id = ANY($1)` beside the join on purpose: without it the planner may join by scanning all of notifications.
_SET_STATUSES = """
UPDATE notifications n SET status = u.status, updated_at = $3
FROM unnest($1::uuid[], $2::varchar[]) AS u(id, status)
WHERE n.id = ANY($1::uuid[]) AND n.id = u.id AND n.status IS DISTINCT FROM u.status
"""


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and a provider's error message may carry one."""
    return value.replace("\x00", "")


async def finish_many(connection: asyncpg.Connection, outcomes: list[Outcome]) -> None:
    """Log the attempts, move each delivery to its new status and refresh the notifications' statuses — one
    transaction for the batch, committed before any of its messages is settled."""
    now = utcnow()
    attempts = [(o.claimed, a) for o in outcomes for a in o.attempts]
    async with connection.transaction():
        # Each notification locked first, in id order: two workers finishing its email and its push one after
        # the other each see the other's committed status, and overlapping batches cannot deadlock.
        await connection.execute(_LOCK_NOTIFICATIONS, sorted({o.claimed.notification_id for o in outcomes}))
        if attempts:
            await connection.execute(
                _INSERT_ATTEMPTS,
                [c.delivery_id for c, _ in attempts],
                [c.attempt for c, _ in attempts],
                [a.provider for _, a in attempts],
                [a.outcome for _, a in attempts],
                [_text(a.error) for _, a in attempts],
                [a.started_at for _, a in attempts],
                [a.duration_ms for _, a in attempts],
            )
        await connection.execute(
            _UPDATE_DELIVERIES,
            [o.claimed.delivery_id for o in outcomes],
            [o.status for o in outcomes],
            [_text(o.reason) for o in outcomes],
            [o.provider for o in outcomes],
            [_text(o.provider_message_id) for o in outcomes],
            [json.dumps(o.payload) if o.payload is not None else None for o in outcomes],
            now,
        )
        # Each notification's status derived from its deliveries, as everywhere else (status.derive_status).
        rows = await connection.fetch(_DELIVERY_STATUSES, list({o.claimed.notification_id for o in outcomes}))
        await connection.execute(
            _SET_STATUSES,
            [row["notification_id"] for row in rows],
            [derive_status(row["statuses"]) for row in rows],
            now,
        )


async def release_expired_leases(session: AsyncSession, *, limit: int = 500) -> int:
    """The sweeper: deliveries stuck in SENDING past their lease (a worker died mid-send) go back to the relay,
    which publishes them again. Returns how many."""
    stuck = (
        select(m.DeliveryRow.id)
        .where(m.DeliveryRow.status == m.SENDING, m.DeliveryRow.lease_until < utcnow())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(m.DeliveryRow)
        .where(m.DeliveryRow.id.in_(stuck))
        .values(
            status=m.QUEUED, published_at=None, lease_until=None, status_reason="lease_expired", updated_at=utcnow()
        )
        .returning(m.DeliveryRow.id)
    )
    return len(result.all())
