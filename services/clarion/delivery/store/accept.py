"""The accept's statements: record notifications with their deliveries and idempotency keys (one statement for a
batch), look keys up, prune expired keys. Each is one round trip in autocommit; the ORM took ten for the work of
one accept (core.db.FastPath)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarion.delivery.store.reads import NotificationRecord
from clarion.delivery.store.relay import DISPATCH_CHANNEL, NewDelivery, delivery_columns


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The request that holds an idempotency key: its fingerprint and the notification it made."""

    fingerprint: str
    notification_id: uuid.UUID


# Each key first, then each notification and its deliveries only if its key is ours (or it has none), in one
# statement for a batch: a key held by another live request (even one committing right now: the INSERT waits for it)
# leaves nothing of its notification behind, and a key that expired is taken over. The foreign keys to the
# notifications are checked at the end of the statement, when every row exists. NOTIFY wakes the dispatchers' relay
# when it commits. The notifications written come back; one missing had its key taken.
_INSERT = """
WITH input AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::varchar[], $3::varchar[], $4::int[], $5::text[], $6::text[], $7::smallint[], $8::varchar[],
        $9::varchar[], $10::varchar[], $11::varchar[], $12::varchar[], $13::timestamptz[], $14::varchar[]
    ) AS i(id, user_id, template_key, template_version, message_data, channels, priority, locale, request_id,
           trace_request_id, trace_parent, status, send_at, fingerprint)
), key AS (
    INSERT INTO idempotency_keys AS k (project_id, key, fingerprint, notification_id, created_at, expires_at)
    SELECT $15, i.request_id, i.fingerprint, i.id, $16, $17 FROM input i WHERE i.request_id IS NOT NULL
    ON CONFLICT (project_id, key) DO UPDATE
        SET fingerprint = excluded.fingerprint, notification_id = excluded.notification_id,
            created_at = excluded.created_at, expires_at = excluded.expires_at
        WHERE k.expires_at <= now()
    RETURNING k.key
), notification AS (
    INSERT INTO notifications (
        id, user_id, template_key, template_version, message_data, channels, priority, locale, request_id,
        trace_request_id, trace_parent, status, status_reason, send_at, created_at, updated_at, project_id
    )
    SELECT i.id, i.user_id, i.template_key, i.template_version, i.message_data::jsonb,
        string_to_array(i.channels, ',')::varchar[], i.priority, i.locale, i.request_id, i.trace_request_id,
        i.trace_parent, i.status, '', i.send_at, $16, $16, $15
    FROM input i
    WHERE i.request_id IS NULL OR i.request_id IN (SELECT key FROM key)
    RETURNING id
), delivery AS (
    INSERT INTO deliveries (
        id, notification_id, channel, status, status_reason, payload, due_at, published_at, attempt_count,
        lease_until, provider, provider_message_id, sent_at, created_at, updated_at
    )
    SELECT u.id, u.notification_id, u.channel, u.status, u.reason, u.payload::jsonb, u.due_at, NULL, 0, NULL, '', '',
        NULL, $16, $16
    FROM unnest($18::uuid[], $19::uuid[], $20::varchar[], $21::varchar[], $22::text[], $23::text[], $24::timestamptz[])
        AS u(id, notification_id, channel, status, reason, payload, due_at)
    WHERE u.notification_id IN (SELECT id FROM notification)
)
SELECT id, (SELECT pg_notify($25, '')) FROM notification
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A notification to record: its row, its planned deliveries, and its request's fingerprint (kept with its
    idempotency key, `notification.request_id`, when it has one)."""

    notification: NotificationRecord
    deliveries: Sequence[NewDelivery]
    fingerprint: str


async def find_key(connection: asyncpg.Connection, project_id: str, key: str) -> KeyHolder | None:
    """The live (unexpired) holder of a project's idempotency key."""
    return (await find_keys(connection, project_id, [key])).get(key)


async def insert_notifications(
    connection: asyncpg.Connection,
    accepted: Sequence[Accepted],
    *,
    project_id: str,
    now: datetime,
    key_expires_at: datetime,
) -> set[uuid.UUID]:
    """Record a batch of `project_id`'s notifications with their deliveries and idempotency keys, and wake the
    relay, in one statement. Returns the ids written: one missing had its key held by another live request of the
    project, and nothing of it was written. The keys in a batch must differ."""
    notifications = [a.notification for a in accepted]
    deliveries = [d for a in accepted for d in a.deliveries]
    rows = await connection.fetch(
        _INSERT,
        [n.id for n in notifications],
        [n.user_id for n in notifications],
        [n.template_key for n in notifications],
        [n.template_version for n in notifications],
        [json.dumps(n.message_data, separators=(",", ":")) for n in notifications],
        [",".join(n.channels) for n in notifications],
        [n.priority for n in notifications],
        [n.locale for n in notifications],
        [n.request_id for n in notifications],
        [n.trace_request_id for n in notifications],
        [n.trace_parent for n in notifications],
        [n.status for n in notifications],
        [n.send_at for n in notifications],
        [a.fingerprint for a in accepted],
        project_id,
        now,
        key_expires_at,
        *delivery_columns(deliveries),
        DISPATCH_CHANNEL,
    )
    return {row["id"] for row in rows}


_FIND_KEYS = """
SELECT key, fingerprint, notification_id FROM idempotency_keys
WHERE project_id = $1 AND key = ANY($2::varchar[]) AND expires_at > now()
"""


async def find_keys(connection: asyncpg.Connection, project_id: str, keys: Sequence[str]) -> dict[str, KeyHolder]:
    """The live holders of a project's idempotency keys, by key."""
    rows = await connection.fetch(_FIND_KEYS, project_id, list(keys))
    return {row["key"]: KeyHolder(row["fingerprint"], row["notification_id"]) for row in rows}


_PRUNE_KEYS = """
DELETE FROM idempotency_keys WHERE (project_id, key) IN (
    SELECT project_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1
)
"""


async def prune_keys(connection: asyncpg.Connection, *, limit: int = 1000) -> int:
    """Delete up to `limit` expired idempotency keys; returns how many."""
    result = await connection.execute(_PRUNE_KEYS, limit)
    return int(result.split()[-1])
