"""UserService's tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clarion.core.db import Base, utcnow


class UserRow(Base):
    """A person Clarion notifies."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    email_address: Mapped[str] = mapped_column(String(254), default="")
    phone_number: Mapped[str] = mapped_column(String(16), default="")
    preferred_language: Mapped[str] = mapped_column(String(64), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    push_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    sms_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    in_app_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    quiet_hours_start: Mapped[str] = mapped_column(String(5), default="")
    quiet_hours_end: Mapped[str] = mapped_column(String(5), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    devices: Mapped[list[DeviceRow]] = relationship(
        back_populates="user",
        cascade="all, delete-orphan",
        order_by="DeviceRow.created_at",
        lazy="selectin",
        passive_deletes=True,
    )

    __table_args__ = (
        # One user per address, compared case-insensitively; many users may have none.
        Index(
            "uq_users_email_lower",
            func.lower(email_address),
            unique=True,
            postgresql_where=email_address != "",
        ),
        # ListUsers walks (created_at, id).
        Index("ix_users_created_at_id", "created_at", "id"),
    )


class DeviceRow(Base):
    """A push registration token. A token belongs to one user at a time (the app install's current user)."""

    __tablename__ = "user_devices"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token: Mapped[str] = mapped_column(Text, unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[UserRow] = relationship(back_populates="devices")
