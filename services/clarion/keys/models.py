"""The projects and API keys tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, LargeBinary, String
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, utcnow


class ProjectRow(Base):
    """A project: what a key sees and acts on. Its notifications, idempotency keys and dead letters are its own."""

    __tablename__ = "projects"

    # A slug ("billing"); the default project, "default", holds everything made before projects existed.
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    """One API key: never its secret, only HMAC-SHA256(pepper, id:secret)."""

    __tablename__ = "api_keys"

    # The public part of `clr_<id>_<secret>`.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Who or what the key is for ("billing-service"); a label, not unique.
    name: Mapped[str] = mapped_column(String(100))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), server_default="default")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Written at most once a minute per key and server process, so it lags real use by up to that.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
