"""Every statement on provider_events: each event kept once, by the provider's own id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from clarion.provider_events.sendgrid import Event


async def record(connection: asyncpg.Connection, provider: str, events: Sequence[Event]) -> set[str]:
    """Keep the events not seen before (not applied yet); the ids of those, in the caller's transaction."""
    if not events:
        return set()
    # In id order: two overlapping batches then take their rows' locks in the same order and cannot deadlock.
    events = sorted(events, key=lambda e: e.event_id)
    rows = await connection.fetch(
        """
        INSERT INTO provider_events (provider, event_id, delivery_id, event, occurred_at, applied, detail)
        SELECT $1, e.event_id, e.delivery_id, e.event, e.occurred_at, false, e.detail::jsonb
        FROM unnest($2::varchar[], $3::uuid[], $4::varchar[], $5::timestamptz[], $6::text[])
            AS e(event_id, delivery_id, event, occurred_at, detail)
        ON CONFLICT (provider, event_id) DO NOTHING
        RETURNING event_id
        """,
        provider,
        [e.event_id for e in events],
        [e.delivery_id for e in events],
        [e.event for e in events],
        [e.occurred_at for e in events],
        [json.dumps(e.detail, separators=(",", ":")) for e in events],
    )
    return {row["event_id"] for row in rows}


async def mark_applied(connection: asyncpg.Connection, provider: str, event_ids: Sequence[str]) -> None:
    """Note which events changed something."""
    if event_ids:
        await connection.execute(
            "UPDATE provider_events SET applied = true WHERE provider = $1 AND event_id = ANY($2::varchar[])",
            provider,
            list(event_ids),
        )


async def pending(
    connection: asyncpg.Connection,
    provider: str,
    events: Sequence[str],
    *,
    settle_s: float,
    within_s: float,
    limit: int,
) -> list[dict[str, Any]]:
    """The events (as posted) of the kinds `events`, kept but not applied, received between `within_s` and
    `settle_s` seconds ago, oldest first."""
    rows = await connection.fetch(
        """
        SELECT detail FROM provider_events
        WHERE NOT applied AND delivery_id IS NOT NULL AND provider = $1 AND event = ANY($2::varchar[])
          AND received_at < now() - make_interval(secs => $3) AND received_at > now() - make_interval(secs => $4)
        ORDER BY received_at
        LIMIT $5
        """,
        provider,
        list(events),
        settle_s,
        within_s,
        limit,
    )
    return [json.loads(row["detail"]) if isinstance(row["detail"], str) else dict(row["detail"]) for row in rows]
