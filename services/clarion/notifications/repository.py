"""NotificationService's queries, on a session the caller owns."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, exists, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.core.db import utcnow
from clarion.core.errors import NotFound
from clarion.delivery.lifecycle import (
    PENDING_NOTIFICATION_STATUSES,
    DeliveryStatus,
    NotificationStatus,
    derive_notification_status,
)
from clarion.notifications import models as m

# Channel NOTIFY'd when there is new work for the dispatcher.
DISPATCH_CHANNEL = "clarion_dispatch"


def notification_not_found(notification_id: str) -> NotFound:
    """The one NOT_FOUND every RPC gives for a missing notification."""
    return NotFound(
        f"notification {notification_id!r} not found",
        reason="NOTIFICATION_NOT_FOUND",
        metadata={"notification_id": notification_id},
    )


class NotificationView:
    """A notification with its deliveries and their attempts, as read for the API."""

    def __init__(
        self,
        row: m.NotificationRow,
        deliveries: Sequence[m.DeliveryRow],
        attempts: dict[uuid.UUID, list[m.DeliveryAttemptRow]],
    ) -> None:
        self.row = row
        self.deliveries = list(deliveries)
        self.attempts = attempts


class NotificationRepository:
    """Notifications, idempotency keys and deliveries in PostgreSQL."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def prune_keys(self, *, limit: int = 1000) -> int:
        """Delete up to `limit` expired idempotency keys; returns how many."""
        k = m.IdempotencyKeyRow
        expired = select(k.project_id, k.key).where(k.expires_at <= func.now()).limit(limit)
        result = await self._session.execute(delete(k).where(tuple_(k.project_id, k.key).in_(expired)).returning(k.key))
        return len(result.all())

    async def get(self, notification_id: uuid.UUID, *, project: str | None) -> NotificationView:
        """A notification of `project` (None: of any) with its deliveries and attempts, or NOT_FOUND; another
        project's is NOT_FOUND too, saying nothing of it."""
        row = await self._session.get(m.NotificationRow, notification_id)
        if row is None or (project is not None and row.project_id != project):
            raise notification_not_found(str(notification_id))
        return (await self._views([row]))[0]

    async def _views(self, rows: Sequence[m.NotificationRow]) -> list[NotificationView]:
        ids = [r.id for r in rows]
        deliveries: dict[uuid.UUID, list[m.DeliveryRow]] = defaultdict(list)
        attempts: dict[uuid.UUID, list[m.DeliveryAttemptRow]] = defaultdict(list)
        if ids:
            found = (
                await self._session.execute(
                    select(m.DeliveryRow).where(m.DeliveryRow.notification_id.in_(ids)).order_by(m.DeliveryRow.channel)
                )
            ).scalars()
            for delivery in found:
                deliveries[delivery.notification_id].append(delivery)
            delivery_ids = [d.id for group in deliveries.values() for d in group]
            if delivery_ids:
                query = (
                    select(m.DeliveryAttemptRow)
                    .where(m.DeliveryAttemptRow.delivery_id.in_(delivery_ids))
                    .order_by(m.DeliveryAttemptRow.delivery_id, m.DeliveryAttemptRow.started_at)
                )
                for attempt in (await self._session.execute(query)).scalars():
                    attempts[attempt.delivery_id].append(attempt)
        return [NotificationView(r, deliveries[r.id], attempts) for r in rows]

    async def list_views(
        self,
        *,
        project: str | None,
        user_id: str,
        status: str,
        channel: str,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[NotificationView]:
        """Newest first, before the (created_at, id) position; filtered by project (None: every project), user,
        status and delivery channel."""
        query = (
            select(m.NotificationRow)
            .order_by(m.NotificationRow.created_at.desc(), m.NotificationRow.id.desc())
            .limit(limit)
        )
        if project is not None:
            query = query.where(m.NotificationRow.project_id == project)
        if user_id:
            query = query.where(m.NotificationRow.user_id == user_id)
        if status:
            query = query.where(m.NotificationRow.status == status)
        if channel:
            query = query.where(
                exists().where(m.DeliveryRow.notification_id == m.NotificationRow.id, m.DeliveryRow.channel == channel)
            )
        if before is not None:
            query = query.where(tuple_(m.NotificationRow.created_at, m.NotificationRow.id) < tuple_(*before))
        rows = list((await self._session.execute(query)).scalars())
        return await self._views(rows)

    async def cancel(self, notification_id: uuid.UUID, *, project: str) -> bool:
        """Cancel what of `project`'s notification has not been handed to a provider; False when nothing could be
        cancelled. Another project's notification is NOT_FOUND."""
        # The project in the query, not checked after: another project's row is never locked.
        query = select(m.NotificationRow).where(
            m.NotificationRow.id == notification_id, m.NotificationRow.project_id == project
        )
        row = (await self._session.execute(query.with_for_update())).scalar_one_or_none()
        if row is None:
            raise notification_not_found(str(notification_id))
        now = utcnow()
        if row.status in PENDING_NOTIFICATION_STATUSES:
            row.status, row.status_reason, row.updated_at = NotificationStatus.CANCELLED, "cancelled_by_client", now
            await self._session.flush()
            return True
        result = await self._session.execute(
            update(m.DeliveryRow)
            .where(
                m.DeliveryRow.notification_id == notification_id,
                m.DeliveryRow.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.RETRYING]),
            )
            .values(status=DeliveryStatus.CANCELLED, status_reason="cancelled_by_client", updated_at=now)
            .returning(m.DeliveryRow.id)
        )
        if not result.all():
            return False
        await self.refresh_status(row)
        return True

    async def refresh_status(self, row: m.NotificationRow) -> None:
        """Store the status derived from the notification's deliveries."""
        statuses = (
            await self._session.execute(select(m.DeliveryRow.status).where(m.DeliveryRow.notification_id == row.id))
        ).scalars()
        row.status = derive_notification_status(statuses, reason=row.status_reason)
        row.updated_at = utcnow()
        await self._session.flush()

    async def dead_letters(
        self,
        *,
        project: str | None,
        channel: str,
        user_id: str,
        before: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[tuple[m.DeliveryRow, m.NotificationRow]]:
        """Failed deliveries of `project` (None: of every project) with their notifications, most recently failed
        first."""
        query = (
            select(m.DeliveryRow, m.NotificationRow)
            .join(m.NotificationRow, m.NotificationRow.id == m.DeliveryRow.notification_id)
            .where(m.DeliveryRow.status == DeliveryStatus.FAILED)
            .order_by(m.DeliveryRow.updated_at.desc(), m.DeliveryRow.id.desc())
            .limit(limit)
        )
        if project is not None:
            query = query.where(m.NotificationRow.project_id == project)
        if channel:
            query = query.where(m.DeliveryRow.channel == channel)
        if user_id:
            query = query.where(m.NotificationRow.user_id == user_id)
        if before is not None:
            query = query.where(tuple_(m.DeliveryRow.updated_at, m.DeliveryRow.id) < tuple_(*before))
        return [(delivery, notification) for delivery, notification in (await self._session.execute(query)).all()]

    async def replay(
        self,
        *,
        project: str,
        ids: Sequence[uuid.UUID],
        channel: str,
        user_id: str,
        failed_after: datetime | None,
        limit: int,
    ) -> list[uuid.UUID]:
        """Queue `project`'s failed deliveries again (fresh attempts, same ids); the relay publishes them. Returns
        their ids (another project's are not among them, as if they did not exist)."""
        now = utcnow()
        chosen = (
            select(m.DeliveryRow.id)
            .where(
                m.DeliveryRow.status == DeliveryStatus.FAILED,
                m.DeliveryRow.notification_id.in_(
                    select(m.NotificationRow.id).where(m.NotificationRow.project_id == project)
                ),
            )
            .limit(limit)
            .with_for_update()
        )
        if ids:
            chosen = chosen.where(m.DeliveryRow.id.in_(ids))
        if channel:
            chosen = chosen.where(m.DeliveryRow.channel == channel)
        if user_id:
            chosen = chosen.where(
                m.DeliveryRow.notification_id.in_(
                    select(m.NotificationRow.id).where(m.NotificationRow.user_id == user_id)
                )
            )
        if failed_after is not None:
            chosen = chosen.where(m.DeliveryRow.updated_at >= failed_after)
        result = await self._session.execute(
            update(m.DeliveryRow)
            .where(m.DeliveryRow.id.in_(chosen))
            .values(
                status=DeliveryStatus.QUEUED,
                status_reason="replayed",
                attempt_count=0,
                published_at=None,
                lease_until=None,
                due_at=now,
                updated_at=now,
            )
            .returning(m.DeliveryRow.id, m.DeliveryRow.notification_id)
        )
        replayed = result.all()
        # Locked in id order, as the workers lock them when they record outcomes: no deadlock between the two.
        notifications = (
            await self._session.execute(
                select(m.NotificationRow)
                .where(m.NotificationRow.id.in_({row.notification_id for row in replayed}))
                .order_by(m.NotificationRow.id)
                .with_for_update()
            )
        ).scalars()
        for notification in notifications:
            await self.refresh_status(notification)
        if replayed:
            await self._session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": DISPATCH_CHANNEL})
        return [row.id for row in replayed]
