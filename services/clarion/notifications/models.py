"""NotificationService's tables. The notification table is the outbox of accepted work; the delivery table is the
outbox of messages to publish (docs/message-flow.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, utcnow
from clarion.delivery.lifecycle import PENDING_NOTIFICATION_STATUSES, DeliveryStatus
from clarion.keys.scopes import DEFAULT_PROJECT

# The statuses (of notifications and deliveries) and attempt outcomes are clarion.delivery.lifecycle's, stored as
# their string values.


class NotificationRow(Base):
    """A request to notify a user, recorded durably before the caller gets its id."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # The project of the key that sent it: only that project's keys see it (docs/security.md).
    project_id: Mapped[str] = mapped_column(String(63), default=DEFAULT_PROJECT, server_default=DEFAULT_PROJECT)
    user_id: Mapped[str] = mapped_column(String(63))
    template_key: Mapped[str] = mapped_column(String(63))
    template_version: Mapped[int] = mapped_column(Integer)
    message_data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(16)), default=list)
    priority: Mapped[int] = mapped_column(SmallInteger)
    locale: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # The x-request-id of the accepting call, carried in message headers so one request's log lines can be found
    # in the dispatcher and the workers too.
    trace_request_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    # The W3C traceparent of the accepting call's span: the dispatcher and the workers continue its trace.
    trace_parent: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[str] = mapped_column(String(16))
    # Why there are no deliveries (user deleted, template deleted), when that is so.
    status_reason: Mapped[str] = mapped_column(Text, default="")
    send_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        # The dispatcher's claim: due pending notifications, oldest first.
        Index(
            "ix_notifications_pending_send_at", "send_at", postgresql_where=status.in_(PENDING_NOTIFICATION_STATUSES)
        ),
        Index("ix_notifications_user_created", "user_id", "created_at", "id"),
        Index("ix_notifications_status_created", "status", "created_at", "id"),
        Index("ix_notifications_created", "created_at", "id"),
        Index("ix_notifications_project_created", "project_id", "created_at", "id"),
    )


class IdempotencyKeyRow(Base):
    """An idempotency key, the fingerprint of the request first sent with it, and the notification it made."""

    __tablename__ = "idempotency_keys"

    project_id: Mapped[str] = mapped_column(String(63), primary_key=True, server_default=DEFAULT_PROJECT)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class DeliveryRow(Base):
    """One channel's delivery of a notification: rendered content, recipient, and where it stands."""

    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str] = mapped_column(Text, default="")
    # What the worker sends: recipient(s) and rendered content.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    provider: Mapped[str] = mapped_column(String(32), default="")
    provider_message_id: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        # One delivery per channel, however many dispatchers race for the notification.
        UniqueConstraint("notification_id", "channel"),
        # The relay's scan: committed, due, not yet published.
        Index(
            "ix_deliveries_unpublished_due",
            "due_at",
            postgresql_where=(status == DeliveryStatus.QUEUED) & published_at.is_(None),
        ),
        # The sweeper's scan: published, then neither claimed nor finished (delivery.sweeper).
        Index(
            "ix_deliveries_published_unfinished",
            "published_at",
            postgresql_where=status.in_((DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)) & published_at.isnot(None),
        ),
        # Dead letters, newest first (ListDeadLetters), and their count (the dead-letter gauge).
        Index("ix_deliveries_failed_updated", "updated_at", "id", postgresql_where=status == DeliveryStatus.FAILED),
        # GetDeliveryStats' window.
        Index("ix_deliveries_created", "created_at"),
    )


class DeliveryAttemptRow(Base):
    """One attempt to hand a delivery to a provider."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    attempt_number: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    error: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(default=0.0)
