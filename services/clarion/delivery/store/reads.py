"""What the API and the operators' commands read: a notification with its deliveries and attempts, lists of them,
dead letters, delivery statistics and the recent-deliveries report. A view assembled from several statements is
read in one REPEATABLE READ snapshot, so it never shows a delivery newer than its notification's status."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

import asyncpg

from clarion.delivery.lifecycle import (
    REACHED_DELIVERY_STATUSES,
    REFUSED_DELIVERY_STATUSES,
    DeliveryStatus,
    sql,
)


def _columns(record: type, prefix: str = "") -> str:
    """The record's fields as a column list (`prefix` a table alias): a column added by a newer migration is never
    read by accident."""
    return ", ".join(f"{prefix}{f.name}" for f in fields(record))


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """A notifications row. Also what an accept records (clarion.delivery.store.accept)."""

    id: uuid.UUID
    project_id: str
    user_id: str
    template_key: str
    template_version: int
    message_data: dict[str, Any]
    channels: list[str]
    priority: int
    locale: str
    request_id: str | None
    trace_request_id: str
    trace_parent: str
    status: str
    status_reason: str
    send_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["message_data"] = json.loads(values["message_data"])
        values["channels"] = list(values["channels"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A deliveries row, without its payload (recipients and content are the workers' business)."""

    id: uuid.UUID
    notification_id: uuid.UUID
    channel: str
    status: str
    status_reason: str
    due_at: datetime
    published_at: datetime | None
    attempt_count: int
    lease_until: datetime | None
    provider: str
    provider_message_id: str
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """A delivery_attempts row."""

    delivery_id: uuid.UUID
    attempt_number: int
    provider: str
    outcome: str
    error: str
    started_at: datetime
    duration_ms: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Self:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


@dataclass(frozen=True, slots=True)
class NotificationView:
    """A notification with its deliveries (by channel) and each delivery's attempts (oldest first)."""

    notification: NotificationRecord
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    attempts: dict[uuid.UUID, list[AttemptRecord]] = field(default_factory=dict)
    # Each delivery's stored payload (recipients and rendered content), when the read asked for it.
    payloads: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A failed delivery with what ListDeadLetters shows of its notification."""

    delivery: DeliveryRecord
    user_id: str
    template_key: str


@asynccontextmanager
async def snapshot(connection: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """One consistent, read-only snapshot for the statements inside."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        yield connection


_DELIVERIES = f"""
SELECT {_columns(DeliveryRecord)} FROM deliveries WHERE notification_id = ANY($1::uuid[])
ORDER BY notification_id, channel
"""  # noqa: S608 - column names from the record
# The same rows with their payloads, for the one read that shows what each delivery sends.
_DELIVERIES_WITH_PAYLOADS = f"""
SELECT {_columns(DeliveryRecord)}, payload FROM deliveries WHERE notification_id = ANY($1::uuid[])
ORDER BY notification_id, channel
"""  # noqa: S608 - column names from the record
_ATTEMPTS = f"""
SELECT {_columns(AttemptRecord)} FROM delivery_attempts WHERE delivery_id = ANY($1::uuid[])
ORDER BY delivery_id, started_at
"""  # noqa: S608 - column names from the record


_NOTIFICATIONS = f"SELECT {_columns(NotificationRecord)} FROM notifications WHERE id = ANY($1::uuid[])"  # noqa: S608 - column names from the record


async def get_views(
    connection: asyncpg.Connection, notification_ids: list[uuid.UUID], *, project: str | None
) -> dict[uuid.UUID, NotificationView]:
    """`project`'s (None: any project's) notifications among `notification_ids` with their deliveries and attempts,
    by id; one that is missing, or another project's, is left out."""
    async with snapshot(connection):
        return await _get_views(connection, notification_ids, project=project)


async def _get_views(
    connection: asyncpg.Connection, notification_ids: list[uuid.UUID], *, project: str | None, payloads: bool = False
) -> dict[uuid.UUID, NotificationView]:
    rows = await connection.fetch(_NOTIFICATIONS, notification_ids)
    records = [NotificationRecord.from_row(row) for row in rows if project is None or row["project_id"] == project]
    return {view.notification.id: view for view in await _views(connection, records, payloads=payloads)}


async def get_view(
    connection: asyncpg.Connection, notification_id: uuid.UUID, *, project: str | None, payloads: bool = False
) -> NotificationView | None:
    """A notification of `project` (None: of any) with its deliveries and attempts, and with `payloads` their stored
    payloads; None when there is none, or it is another project's."""
    async with snapshot(connection):
        views = await _get_views(connection, [notification_id], project=project, payloads=payloads)
    return views.get(notification_id)


async def _views(
    connection: asyncpg.Connection, notifications: list[NotificationRecord], *, payloads: bool = False
) -> list[NotificationView]:
    deliveries: dict[uuid.UUID, list[DeliveryRecord]] = defaultdict(list)
    attempts: dict[uuid.UUID, list[AttemptRecord]] = defaultdict(list)
    stored: dict[uuid.UUID, dict[str, Any]] = {}
    if notifications:
        query = _DELIVERIES_WITH_PAYLOADS if payloads else _DELIVERIES
        for row in await connection.fetch(query, [n.id for n in notifications]):
            delivery = DeliveryRecord.from_row(row)
            deliveries[delivery.notification_id].append(delivery)
            if payloads:
                stored[delivery.id] = json.loads(row["payload"])
        delivery_ids = [d.id for group in deliveries.values() for d in group]
        if delivery_ids:
            for row in await connection.fetch(_ATTEMPTS, delivery_ids):
                attempt = AttemptRecord.from_row(row)
                attempts[attempt.delivery_id].append(attempt)
    return [NotificationView(n, deliveries[n.id], attempts, stored) for n in notifications]


class _Where:
    """AND-ed conditions with numbered parameters, for the reads whose filters are optional."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[Any] = []

    def add(self, condition: str, *values: Any) -> None:
        """`condition` with `{}` for each value, in order: `add("n.user_id = {}", user_id)`."""
        numbers = [f"${len(self.args) + i}" for i in range(1, len(values) + 1)]
        self.args.extend(values)
        self.conditions.append(condition.format(*numbers))

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.conditions)}" if self.conditions else ""

    def next(self, value: Any) -> str:
        """A parameter outside the conditions (a LIMIT)."""
        self.args.append(value)
        return f"${len(self.args)}"


async def list_views(
    connection: asyncpg.Connection,
    *,
    project: str | None,
    user_id: str,
    status: str,
    channel: str,
    created: tuple[datetime | None, datetime | None] = (None, None),
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[NotificationView]:
    """Newest first, before the (created_at, id) position; filtered by project (None: every project), user,
    status, delivery channel and the window `created` ([start, end), either open)."""
    where = _Where()
    if project is not None:
        where.add("n.project_id = {}", project)
    if user_id:
        where.add("n.user_id = {}", user_id)
    if status:
        where.add("n.status = {}", status)
    if channel:
        where.add("EXISTS (SELECT FROM deliveries d WHERE d.notification_id = n.id AND d.channel = {})", channel)
    if created[0] is not None:
        where.add("n.created_at >= {}", created[0])
    if created[1] is not None:
        where.add("n.created_at < {}", created[1])
    if before is not None:
        where.add("(n.created_at, n.id) < ({}, {})", *before)
    query = f"""
    SELECT {_columns(NotificationRecord, "n.")} FROM notifications n {where.sql()}
    ORDER BY n.created_at DESC, n.id DESC LIMIT {where.next(limit)}
    """  # noqa: S608 - the conditions are fixed text; the values are parameters
    async with snapshot(connection):
        rows = await connection.fetch(query, *where.args)
        return await _views(connection, [NotificationRecord.from_row(row) for row in rows])


async def dead_letters(
    connection: asyncpg.Connection,
    *,
    project: str | None,
    channel: str,
    user_id: str,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[DeadLetterRecord]:
    """Failed deliveries of `project` (None: of every project), most recently failed first."""
    where = _Where()
    where.add(f"d.status = {sql(DeliveryStatus.FAILED)}")
    if project is not None:
        where.add("n.project_id = {}", project)
    if channel:
        where.add("d.channel = {}", channel)
    if user_id:
        where.add("n.user_id = {}", user_id)
    if before is not None:
        where.add("(d.updated_at, d.id) < ({}, {})", *before)
    query = f"""
    SELECT {_columns(DeliveryRecord, "d.")}, n.user_id, n.template_key
    FROM deliveries d JOIN notifications n ON n.id = d.notification_id {where.sql()}
    ORDER BY d.updated_at DESC, d.id DESC LIMIT {where.next(limit)}
    """  # noqa: S608 - the conditions are fixed text; the values are parameters
    rows = await connection.fetch(query, *where.args)
    return [DeadLetterRecord(DeliveryRecord.from_row(row), row["user_id"], row["template_key"]) for row in rows]


# Every status a delivery can have, in the order reports print them.
STATUSES = tuple(DeliveryStatus)


@dataclass(frozen=True, slots=True)
class StatsGroup:
    """One slice of the window: the totals (channel and provider empty), a channel's, or a provider's."""

    channel: str
    provider: str
    counts: dict[str, int]
    time_to_send_p50_s: float | None
    time_to_send_p95_s: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        """Deliveries that came to an end at a provider: sent (or reported delivered), or failed (or reported
        bounced or dropped)."""
        return sum(self.counts[s] for s in (*REACHED_DELIVERY_STATUSES, *REFUSED_DELIVERY_STATUSES))

    @property
    def success_rate(self) -> float:
        """(sent + delivered) / finished; 0 when nothing has finished."""
        reached = sum(self.counts[s] for s in REACHED_DELIVERY_STATUSES)
        return reached / self.finished if self.finished else 0.0


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """The window, its totals, and its channel and provider slices (sorted by name)."""

    start: datetime
    end: datetime
    totals: StatsGroup
    channels: list[StatsGroup] = field(default_factory=list)
    providers: list[StatsGroup] = field(default_factory=list)


# The deliveries created in the window (ix_deliveries_created). One statement with GROUPING SETS gives the totals,
# each channel's slice and each provider's together: counts by status with FILTER, and the time to send (the
# delivery's sent_at minus its notification's acceptance) as continuous percentiles over the sent ones.
_SECONDS_TO_SEND = "extract(epoch FROM d.sent_at - n.created_at)"
_STATS_COLUMNS = ", ".join(
    [
        "grouping(d.channel) AS by_channel",
        "grouping(d.provider) AS by_provider",
        "d.channel",
        "d.provider",
        *(f"count(*) FILTER (WHERE d.status = {sql(status)}) AS {status.value}" for status in STATUSES),
        *(
            f"percentile_cont({fraction}) WITHIN GROUP (ORDER BY {_SECONDS_TO_SEND}) "
            f"FILTER (WHERE d.status IN ({sql(*REACHED_DELIVERY_STATUSES)}, {sql(DeliveryStatus.BOUNCED)})) AS {name}"
            for name, fraction in (("p50", 0.5), ("p95", 0.95))
        ),
    ]
)


async def delivery_stats(
    connection: asyncpg.Connection,
    *,
    start: datetime,
    end: datetime,
    channel: str = "",
    provider: str = "",
    project: str | None,
) -> DeliveryStats:
    """Statistics of the deliveries created in [start, end), optionally only one channel's or one provider's, of
    one project (None: of every project)."""
    where = _Where()
    where.add("d.created_at >= {} AND d.created_at < {}", start, end)
    if channel:
        where.add("d.channel = {}", channel)
    if provider:
        where.add("d.provider = {}", provider)
    if project is not None:
        where.add("n.project_id = {}", project)
    query = f"""
    SELECT {_STATS_COLUMNS}
    FROM deliveries d JOIN notifications n ON n.id = d.notification_id {where.sql()}
    GROUP BY GROUPING SETS ((), (d.channel), (d.provider))
    """  # noqa: S608 - the conditions are fixed text; the values are parameters
    totals = StatsGroup("", "", dict.fromkeys(STATUSES, 0), None, None)
    channels: list[StatsGroup] = []
    providers: list[StatsGroup] = []
    for row in await connection.fetch(query, *where.args):
        by_channel, by_provider = not row["by_channel"], not row["by_provider"]
        if by_provider and not row["provider"]:
            continue  # deliveries no provider has handled yet (queued, skipped): in the totals only
        group = StatsGroup(
            channel=row["channel"] if by_channel else "",
            provider=row["provider"] if by_provider else "",
            counts={status: int(row[status.value]) for status in STATUSES},
            time_to_send_p50_s=_seconds(row["p50"]),
            time_to_send_p95_s=_seconds(row["p95"]),
        )
        if by_channel:
            channels.append(group)
        elif by_provider:
            providers.append(group)
        else:
            totals = group
    return DeliveryStats(
        start=start,
        end=end,
        totals=totals,
        channels=sorted(channels, key=lambda g: g.channel),
        providers=sorted(providers, key=lambda g: g.provider),
    )


def _seconds(value: float | None) -> float | None:
    return None if value is None else max(0.0, float(value))


@dataclass(frozen=True, slots=True)
class DeliveryLine:
    """One row of `clarion deliveries`: a delivery with the error of its last failed attempt."""

    updated_at: datetime
    notification_id: str
    delivery_id: str
    channel: str
    status: str
    attempts: int
    provider: str
    last_error: str


async def recent_deliveries(
    connection: asyncpg.Connection, *, limit: int, status: str = "", channel: str = ""
) -> list[DeliveryLine]:
    """The most recently changed deliveries, newest first, with the error of each one's last failed attempt."""
    where = _Where()
    if status:
        where.add("d.status = {}", status)
    if channel:
        where.add("d.channel = {}", channel)
    query = f"""
    SELECT d.updated_at, d.notification_id, d.id, d.channel, d.status, d.attempt_count, d.provider,
        coalesce((SELECT a.error FROM delivery_attempts a WHERE a.delivery_id = d.id AND a.error <> ''
                  ORDER BY a.started_at DESC LIMIT 1), d.status_reason) AS last_error
    FROM deliveries d {where.sql()}
    ORDER BY d.updated_at DESC LIMIT {where.next(limit)}
    """  # noqa: S608 - the conditions are fixed text; the values are parameters
    return [
        DeliveryLine(
            updated_at=row["updated_at"],
            notification_id=str(row["notification_id"]),
            delivery_id=str(row["id"]),
            channel=row["channel"],
            status=row["status"],
            attempts=row["attempt_count"],
            provider=row["provider"],
            last_error=row["last_error"] or "",
        )
        for row in await connection.fetch(query, *where.args)
    ]


async def notification_project(connection: asyncpg.Connection, notification_id: uuid.UUID) -> str | None:
    """The project a notification belongs to; None when there is no such notification."""
    project: str | None = await connection.fetchval(
        "SELECT project_id FROM notifications WHERE id = $1", notification_id
    )
    return project
