"""What providers report about deliveries they accepted (clarion.provider_events): the statements that find the
reported deliveries and move them on (SENT to DELIVERED, BOUNCED or DROPPED; DELIVERED to BOUNCED), and settle
their notifications' status again. The lock order is the store's: the notifications first, in id order, then their
deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarion.delivery.lifecycle import (
    Component,
    DeliveryStatus,
    IllegalMove,
    check_delivery_move,
    derive_notification_status,
)


@dataclass(frozen=True, slots=True)
class Report:
    """A provider's word on one delivery: the status it moves it to, with a reason (a closed set)."""

    delivery_id: uuid.UUID
    status: DeliveryStatus
    reason: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Reported:
    """What a batch of reports came to: the project of each delivery found (for suppressions), and the deliveries
    whose status changed."""

    projects: dict[uuid.UUID, str]
    moved: set[uuid.UUID]


async def apply_reports(
    connection: asyncpg.Connection, reports: Sequence[Report], *, also: Sequence[uuid.UUID] = ()
) -> Reported:
    """Apply `reports` in the order they happened, each only where the lifecycle allows it (a `delivered` after a
    bounce, or for a delivery not yet SENT, changes nothing), and settle the notifications touched. The projects
    answered cover the reported deliveries and `also` (deliveries of events that move nothing, such as a spam
    report, whose address is suppressed in its project). Run inside the caller's transaction."""
    ids = sorted({report.delivery_id for report in reports} | set(also))
    if not ids:
        return Reported({}, set())
    rows = await connection.fetch(
        """
        SELECT d.id, d.notification_id, d.status, n.project_id
        FROM deliveries d JOIN notifications n ON n.id = d.notification_id
        WHERE d.id = ANY($1::uuid[])
        """,
        ids,
    )
    projects = {row["id"]: row["project_id"] for row in rows}
    notification_of = {row["id"]: row["notification_id"] for row in rows}
    # Notifications first, in id order: the same order as every transaction that writes a delivery and then its
    # notification (delivery/store/__init__.py), so none can deadlock another.
    await connection.execute(
        "SELECT id FROM notifications WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        sorted(set(notification_of.values())),
    )
    current = {
        row["id"]: DeliveryStatus(row["status"])
        for row in await connection.fetch(
            "SELECT id, status FROM deliveries WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", ids
        )
        if row["status"] in DeliveryStatus._value2member_map_
    }
    moved: set[uuid.UUID] = set()
    for report in sorted(reports, key=lambda r: r.occurred_at):
        before = current.get(report.delivery_id)
        if before is None or before == report.status:
            continue
        try:
            check_delivery_move(before, report.status, Component.PROVIDER)
        except IllegalMove:
            continue
        await connection.execute(
            "UPDATE deliveries SET status = $2, status_reason = $3, updated_at = now() WHERE id = $1",
            report.delivery_id,
            report.status.value,
            report.reason,
        )
        current[report.delivery_id] = report.status
        moved.add(report.delivery_id)
    touched = sorted({notification_of[delivery] for delivery in moved})
    if touched:
        rows = await connection.fetch(
            "SELECT notification_id, array_agg(status) AS statuses FROM deliveries "
            "WHERE notification_id = ANY($1::uuid[]) GROUP BY notification_id",
            touched,
        )
        for row in rows:
            status = derive_notification_status(row["statuses"])
            await connection.execute(
                "UPDATE notifications SET status = $2, updated_at = now() WHERE id = $1 AND status <> $2",
                row["notification_id"],
                status.value,
            )
    return Reported(projects, moved)
