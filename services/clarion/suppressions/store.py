"""Every statement on the suppressions table, on the plain asyncpg pool."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class Suppressed:
    """One suppressed address of a project on one channel."""

    channel: str  # "email" | "sms"
    address: str  # email in lower case, phone in E.164
    reason: str  # "manual" | "hard_bounce" | "spam_report" | "unsubscribe"
    detail: str
    created_at: datetime


def _row(row: asyncpg.Record) -> Suppressed:
    return Suppressed(row["channel"], row["address"], row["reason"], row["detail"], row["created_at"])


async def add(
    connection: asyncpg.Connection, project_id: str, channel: str, address: str, reason: str, detail: str
) -> Suppressed:
    """Suppress an address; one already suppressed keeps its first entry, which is returned. The no-op update makes
    the statement return the existing row even when another transaction inserted it a moment ago (DO NOTHING would
    return nothing, and a second SELECT in the same statement would not see that row yet)."""
    row = await connection.fetchrow(
        """
        INSERT INTO suppressions (project_id, channel, address, reason, detail) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (project_id, channel, address) DO UPDATE SET reason = suppressions.reason
        RETURNING channel, address, reason, detail, created_at
        """,
        project_id,
        channel,
        address,
        reason,
        detail,
    )
    return _row(row)


async def remove(connection: asyncpg.Connection, project_id: str, channel: str, address: str) -> bool:
    """Lift a suppression; False when there was none."""
    status: str = await connection.execute(
        "DELETE FROM suppressions WHERE project_id = $1 AND channel = $2 AND address = $3", project_id, channel, address
    )
    return status != "DELETE 0"


async def page(
    connection: asyncpg.Connection,
    project_id: str,
    *,
    channel: str | None,
    after: tuple[datetime, str, str] | None,
    limit: int,
) -> list[Suppressed]:
    """A page of the project's suppressions, newest first, after `after` (the last one's created_at, channel and
    address)."""
    rows = await connection.fetch(
        """
        SELECT channel, address, reason, detail, created_at FROM suppressions
        WHERE project_id = $1 AND ($2::varchar IS NULL OR channel = $2)
          AND ($3::timestamptz IS NULL OR (created_at, channel, address) < ($3, $4, $5))
        ORDER BY created_at DESC, channel DESC, address DESC
        LIMIT $6
        """,
        project_id,
        channel,
        after[0] if after else None,
        after[1] if after else "",
        after[2] if after else "",
        limit,
    )
    return [_row(row) for row in rows]


async def suppressed(
    connection: asyncpg.Connection, project_id: str, recipients: Iterable[tuple[str, str]]
) -> Mapping[tuple[str, str], str]:
    """Which of the (channel, address) pairs the project suppresses, with the reason; one round trip for a batch."""
    pairs = sorted(set(recipients))
    if not pairs:
        return {}
    rows = await connection.fetch(
        """
        SELECT s.channel, s.address, s.reason FROM suppressions s
        JOIN unnest($2::varchar[], $3::varchar[]) AS r(channel, address)
          ON s.channel = r.channel AND s.address = r.address
        WHERE s.project_id = $1
        """,
        project_id,
        [channel for channel, _ in pairs],
        [address for _, address in pairs],
    )
    return {(row["channel"], row["address"]): row["reason"] for row in rows}
