"""TemplateService's tables: one row per template key, one immutable row per version."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.db import Base, utcnow


class TemplateRow(Base):
    """A template key: which version is the latest, and whether it is deleted."""

    __tablename__ = "templates"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class TemplateVersionRow(Base):
    """One version of a template, never changed once written."""

    __tablename__ = "template_versions"

    key: Mapped[str] = mapped_column(ForeignKey("templates.key", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    default_locale: Mapped[str] = mapped_column(String(64))
    syntax: Mapped[str] = mapped_column(String(16))
    # {locale: {"subject", ..., "push_data": {...}, "sms_body", "in_app_title", ..., "in_app_data": {...}}} (the
    # non-empty parts of clarion.templates.content.PARTS and MAP_PARTS); the default
    # locale's content is under its own tag like any other.
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


TemplateRowPair = tuple[TemplateRow, TemplateVersionRow]
