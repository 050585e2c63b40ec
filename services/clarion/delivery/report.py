"""`clarion deliveries`: recent deliveries with their attempts and last error, for operators (the seed system's
check_email_logs.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clarion.notifications import models as m


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """One row of the report."""

    updated_at: datetime
    notification_id: str
    delivery_id: str
    channel: str
    status: str
    attempts: int
    provider: str
    last_error: str


async def recent_deliveries(
    sessions: async_sessionmaker[AsyncSession], *, limit: int, status: str = "", channel: str = ""
) -> list[DeliveryLine]:
    """The most recently changed deliveries, newest first, with the error of each one's last failed attempt."""
    last_error = (
        select(m.DeliveryAttemptRow.error)
        .where(m.DeliveryAttemptRow.delivery_id == m.DeliveryRow.id, m.DeliveryAttemptRow.error != "")
        .order_by(m.DeliveryAttemptRow.started_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(m.DeliveryRow, func.coalesce(last_error, m.DeliveryRow.status_reason))
        .order_by(m.DeliveryRow.updated_at.desc())
        .limit(limit)
    )
    if status:
        query = query.where(m.DeliveryRow.status == status)
    if channel:
        query = query.where(m.DeliveryRow.channel == channel)
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    return [
        DeliveryLine(
            updated_at=delivery.updated_at,
            notification_id=str(delivery.notification_id),
            delivery_id=str(delivery.id),
            channel=delivery.channel,
            status=delivery.status,
            attempts=delivery.attempt_count,
            provider=delivery.provider,
            last_error=str(error or ""),
        )
        for delivery, error in rows
    ]


def format_report(lines: list[DeliveryLine]) -> str:
    """A fixed-width table, one delivery per line."""
    header = f"{'UPDATED (UTC)':<20} {'DELIVERY':<36} {'CHANNEL':<7} {'STATUS':<10} {'TRIES':>5} {'PROVIDER':<9} ERROR"
    out = [header]
    for line in lines:
        out.append(
            f"{line.updated_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {line.delivery_id:<36} {line.channel:<7} "
            f"{line.status:<10} {line.attempts:>5} {line.provider or '-':<9} {line.last_error[:80]}"
        )
    if not lines:
        out.append("(no deliveries)")
    return "\n".join(out)
