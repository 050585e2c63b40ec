"""Recording what happened to a delivery: claims, attempts and final states, each in its own short transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import utcnow
from clarion.notifications import models as m
from clarion.notifications.repository import NotificationRepository


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


async def claim(session: AsyncSession, delivery_id: uuid.UUID, *, lease_s: float) -> Claimed | None:
    """QUEUED/RETRYING → SENDING with attempt + 1 and a lease; None when the delivery is already handled (or being
    handled under a live lease): that is how a duplicate message is recognised and dropped."""
    now = utcnow()
    row = (
        await session.execute(
            update(m.DeliveryRow)
            .where(
                m.DeliveryRow.id == delivery_id,
                m.DeliveryRow.status.in_([m.QUEUED, m.RETRYING]),
            )
            .values(
                status=m.SENDING,
                attempt_count=m.DeliveryRow.attempt_count + 1,
                lease_until=now + timedelta(seconds=lease_s),
                updated_at=now,
            )
            .returning(m.DeliveryRow)
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    user_id, accepted_at = (
        await session.execute(
            select(m.NotificationRow.user_id, m.NotificationRow.created_at).where(
                m.NotificationRow.id == row.notification_id
            )
        )
    ).one()
    return Claimed(row.id, row.notification_id, user_id, row.channel, row.attempt_count, dict(row.payload), accepted_at)


async def finish(
    session: AsyncSession,
    claimed: Claimed,
    attempts: list[Attempt],
    *,
    status: str,
    reason: str = "",
    provider: str = "",
    provider_message_id: str = "",
    payload: dict[str, Any] | None = None,
) -> None:
    """Log the attempts and move the delivery to `status` (SENT, FAILED or RETRYING), then refresh the
    notification's status — one transaction, committed before the message is acked."""
    now = utcnow()
    for attempt in attempts:
        session.add(
            m.DeliveryAttemptRow(
                delivery_id=claimed.delivery_id,
                attempt_number=claimed.attempt,
                provider=attempt.provider,
                outcome=attempt.outcome,
                error=attempt.error,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
            )
        )
    values: dict[str, Any] = {"status": status, "status_reason": reason, "updated_at": now, "lease_until": None}
    if provider:
        values["provider"] = provider
    if provider_message_id:
        values["provider_message_id"] = provider_message_id
    if status == m.SENT:
        values["sent_at"] = now
    if payload is not None:
        values["payload"] = payload
    await session.execute(update(m.DeliveryRow).where(m.DeliveryRow.id == claimed.delivery_id).values(**values))
    notification = await session.get(m.NotificationRow, claimed.notification_id, with_for_update=True)
    if notification is not None:
        await NotificationRepository(session).refresh_status(notification)


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
