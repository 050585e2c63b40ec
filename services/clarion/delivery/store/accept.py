"""The accept's statements: record a notification with its idempotency key, look a key up, prune expired keys. The
first two are one round trip each in autocommit; the ORM took ten for the same work (core.db.FastPath)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from clarion.delivery.store.reads import NotificationRecord
from clarion.delivery.store.relay import DISPATCH_CHANNEL, NewDelivery


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The request that holds an idempotency key: its fingerprint and the notification it made."""

    fingerprint: str
    notification_id: uuid.UUID


_FIND_KEY = """
SELECT fingerprint, notification_id FROM idempotency_keys WHERE project_id = $1 AND key = $2 AND expires_at > now()
"""

# The key first, then the notification and its deliveries only if the key is ours, in one statement: a key held by
# another live request (even one committing right now: the INSERT waits for it) leaves nothing behind, and a key
# that expired is taken over. The foreign keys to the notification are checked at the end of the statement, when
# every row exists. NOTIFY wakes the dispatchers' relay when it commits; no row back means the key was taken.
_INSERT = """
WITH key AS (
    INSERT INTO idempotency_keys AS k (project_id, key, fingerprint, notification_id, created_at, expires_at)
    SELECT $18::varchar, $9::varchar, $15::varchar, $1::uuid, $14::timestamptz, $16::timestamptz
    WHERE $9::varchar IS NOT NULL
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
    SELECT $1, $2, $3, $4, $5::jsonb, $6::varchar[], $7, $8, $9, $10, $11, $12, '', $13, $14, $14, $18
    WHERE $9::varchar IS NULL OR EXISTS (SELECT FROM key)
    RETURNING id
), delivery AS (
    INSERT INTO deliveries (
        id, notification_id, channel, status, status_reason, payload, due_at, published_at, attempt_count,
        lease_until, provider, provider_message_id, sent_at, created_at, updated_at
    )
    SELECT u.id, $1, u.channel, u.status, u.reason, u.payload::jsonb, u.due_at, NULL, 0, NULL, '', '', NULL, $14, $14
    FROM unnest($19::uuid[], $20::varchar[], $21::varchar[], $22::text[], $23::text[], $24::timestamptz[])
        AS u(id, channel, status, reason, payload, due_at)
    WHERE EXISTS (SELECT FROM notification)
)
SELECT id, pg_notify($17, '') FROM notification
"""


async def find_key(connection: asyncpg.Connection, project_id: str, key: str) -> KeyHolder | None:
    """The live (unexpired) holder of a project's idempotency key."""
    row = await connection.fetchrow(_FIND_KEY, project_id, key)
    return KeyHolder(row["fingerprint"], row["notification_id"]) if row is not None else None


async def insert_notification(
    connection: asyncpg.Connection,
    row: NotificationRecord,
    deliveries: Sequence[NewDelivery],
    *,
    fingerprint: str,
    key_expires_at: datetime,
) -> bool:
    """Record `row` with its planned deliveries (and its idempotency key, `row.request_id`, when it has one, in
    `row.project_id`) and wake the relay, in one statement. False when another live request of the project holds
    the key: then nothing was written."""
    inserted = await connection.fetchrow(
        _INSERT,
        row.id,
        row.user_id,
        row.template_key,
        row.template_version,
        json.dumps(row.message_data, separators=(",", ":")),
        row.channels,
        row.priority,
        row.locale,
        row.request_id,
        row.trace_request_id,
        row.trace_parent,
        row.status,
        row.send_at,
        row.created_at,
        fingerprint,
        key_expires_at,
        DISPATCH_CHANNEL,
        row.project_id,
        [d.id for d in deliveries],
        [d.channel for d in deliveries],
        [d.status for d in deliveries],
        [d.status_reason for d in deliveries],
        [json.dumps(d.payload, separators=(",", ":")) for d in deliveries],
        [d.due_at for d in deliveries],
    )
    return inserted is not None


_PRUNE_KEYS = """
DELETE FROM idempotency_keys WHERE (project_id, key) IN (
    SELECT project_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1
)
"""


async def prune_keys(connection: asyncpg.Connection, *, limit: int = 1000) -> int:
    """Delete up to `limit` expired idempotency keys; returns how many."""
    result = await connection.execute(_PRUNE_KEYS, limit)
    return int(result.split()[-1])
