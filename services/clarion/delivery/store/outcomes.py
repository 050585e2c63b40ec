"""The workers' and the sweeper's statements: claims, attempts and final states, and leases taken back. A worker's
concurrent handlers share each statement (core.batching.GroupCommit): a claim is one statement for a batch, an
outcome one short transaction for a batch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from clarion.core.db import utcnow
from clarion.delivery.lifecycle import AttemptOutcome, derive_notification_status, sql
from clarion.delivery.lifecycle import DeliveryStatus as D


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker now owns until `lease_until`."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    user_id: str
    channel: str
    attempt: int
    payload: dict[str, Any]
    # When the notification was accepted: the start of its time to send.
    accepted_at: datetime
    # When it was claimed, and until when the claim is this worker's alone; past it, the sweeper may give the
    # delivery to another worker.
    claimed_at: datetime
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One provider call, for the attempt log."""

    provider: str
    outcome: str  # an AttemptOutcome
    error: str
    started_at: datetime
    duration_ms: float


_CLAIM = f"""
WITH claimed AS (
    UPDATE deliveries
    SET status = {sql(D.SENDING)}, attempt_count = attempt_count + 1, lease_until = $2, updated_at = $3
    WHERE id = ANY($1::uuid[]) AND status IN ({sql(D.QUEUED, D.RETRYING)})
    RETURNING id, notification_id, channel, attempt_count, payload
)
SELECT c.id, c.notification_id, n.user_id, c.channel, c.attempt_count, c.payload, n.created_at
FROM claimed c JOIN notifications n ON n.id = c.notification_id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input


async def claim_many(
    connection: asyncpg.Connection, delivery_ids: list[uuid.UUID], *, lease_s: float
) -> list[Claimed | None]:
    """QUEUED/RETRYING → SENDING with attempt + 1 and a lease, for a batch in one statement; None for a delivery
    already handled (or being handled under a live lease): that is how a duplicate message is recognised and
    dropped. An id twice in the batch is claimed once: the second gets None."""
    now = utcnow()
    lease_until = now + timedelta(seconds=lease_s)
    # Sorted, for the usual index scan to lock in id order. Overlapping batches (duplicate messages in two
    # workers) could still deadlock on another plan: PostgreSQL then fails one batch, whose messages are requeued.
    rows = await connection.fetch(_CLAIM, sorted(set(delivery_ids)), lease_until, now)
    claimed = {
        row["id"]: Claimed(
            row["id"],
            row["notification_id"],
            row["user_id"],
            row["channel"],
            row["attempt_count"],
            json.loads(row["payload"]),
            row["created_at"],
            now,
            lease_until,
        )
        for row in rows
    }
    return [claimed.pop(delivery_id, None) for delivery_id in delivery_ids]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one claimed delivery: its attempts and its new status (SENT, FAILED or RETRYING)."""

    claimed: Claimed
    attempts: list[Attempt]
    status: str
    reason: str = ""
    provider: str = ""
    provider_message_id: str = ""
    # The payload to store instead of the claimed one (a push remembers which devices are done).
    payload: dict[str, Any] | None = None
    # RETRYING: when its message comes back from the retry tier (until then the sweeper does not miss it).
    retry_at: datetime | None = None


LOCK_NOTIFICATIONS = "SELECT id FROM notifications WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

_INSERT_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, attempt_number, provider, outcome, error, started_at, duration_ms)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::varchar[], $4::varchar[], $5::text[], $6::timestamptz[],
                     $7::float8[])
"""

# Only the claim that made the attempt may settle the delivery: it is still SENDING under that attempt's number,
# or the sweeper took it back after the lease expired (QUEUED again) and no other worker has claimed it yet; a
# RETRYING outcome then leaves it queued, as its new message is already on its way. An outcome recorded after
# another claim (a later attempt number) changes nothing but the attempt log.
_UPDATE_DELIVERIES = f"""
UPDATE deliveries d
SET status = u.status, status_reason = u.reason, updated_at = $9, lease_until = NULL,
    provider = coalesce(nullif(u.provider, ''), d.provider),
    provider_message_id = coalesce(nullif(u.message_id, ''), d.provider_message_id),
    sent_at = CASE WHEN u.status = {sql(D.SENT)} THEN $9 ELSE d.sent_at END,
    -- a message is on its way again (a retry copy), whoever published the last one: the sweeper keeps watching
    published_at = coalesce(d.published_at, $9),
    payload = coalesce(u.payload::jsonb, d.payload),
    due_at = coalesce(u.due_at, d.due_at)
FROM unnest($1::uuid[], $2::int[], $3::varchar[], $4::text[], $5::varchar[], $6::text[], $7::text[],
            $8::timestamptz[])
    AS u(id, attempt, status, reason, provider, message_id, payload, due_at)
WHERE d.id = u.id AND d.attempt_count = u.attempt
    AND (d.status = {sql(D.SENDING)} OR (d.status = {sql(D.QUEUED)} AND u.status <> {sql(D.RETRYING)}))
RETURNING d.id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input

# An outcome run again after its commit's answer was lost: the delivery already stands where it put it.
_ALREADY_RECORDED = """
SELECT d.id FROM deliveries d
JOIN unnest($1::uuid[], $2::int[], $3::varchar[]) AS u(id, attempt, status) ON d.id = u.id
WHERE d.attempt_count = u.attempt AND d.status = u.status
"""

# The attempt the sweeper logged as unknown when this claim's lease expired (the sweeper dates it at the claim: its
# start is the claim's own time) gives way to the outcome its worker records late.
_RESOLVE_UNKNOWN = f"""
DELETE FROM delivery_attempts a
USING unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS u(delivery_id, attempt, claimed_at)
WHERE a.delivery_id = u.delivery_id AND a.attempt_number = u.attempt AND a.outcome = {sql(AttemptOutcome.UNKNOWN)}
    AND a.started_at = u.claimed_at
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input
LATE_MARGIN = timedelta(seconds=2)

_DELIVERY_STATUSES = """
SELECT notification_id, array_agg(status) AS statuses FROM deliveries
WHERE notification_id = ANY($1::uuid[]) GROUP BY notification_id
"""

# `n.id = ANY($1)` beside the join on purpose: without it the planner may join by scanning all of notifications.
_SET_STATUSES = """
UPDATE notifications n SET status = u.status, updated_at = $3
FROM unnest($1::uuid[], $2::varchar[]) AS u(id, status)
WHERE n.id = ANY($1::uuid[]) AND n.id = u.id AND n.status IS DISTINCT FROM u.status
"""


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and a provider's error message may carry one."""
    return value.replace("\x00", "")


async def finish_many(connection: asyncpg.Connection, outcomes: list[Outcome]) -> set[uuid.UUID]:
    """Log the attempts, move each delivery to its new status and refresh the notifications' statuses — one
    transaction for the batch, committed before any of its messages is settled. Returns the deliveries it
    settled; one missing was claimed again after its lease expired, and only its attempts were logged.

    Idempotent: run again after a commit whose answer was lost (the connection dropped), an outcome already
    recorded counts as settled and its attempts are not logged twice."""
    now = utcnow()
    async with connection.transaction():
        # Each notification locked first, in id order: two workers finishing its email and its push one after
        # the other each see the other's committed status, and overlapping batches cannot deadlock.
        await connection.execute(LOCK_NOTIFICATIONS, sorted({o.claimed.notification_id for o in outcomes}))
        settled = {
            row["id"]
            for row in await connection.fetch(
                _UPDATE_DELIVERIES,
                [o.claimed.delivery_id for o in outcomes],
                [o.claimed.attempt for o in outcomes],
                [o.status for o in outcomes],
                [_text(o.reason) for o in outcomes],
                [o.provider for o in outcomes],
                [_text(o.provider_message_id) for o in outcomes],
                [json.dumps(o.payload) if o.payload is not None else None for o in outcomes],
                [o.retry_at for o in outcomes],
                now,
            )
        }
        unsettled = [o for o in outcomes if o.claimed.delivery_id not in settled]
        recorded: set[uuid.UUID] = set()
        if unsettled:
            rows = await connection.fetch(
                _ALREADY_RECORDED,
                [o.claimed.delivery_id for o in unsettled],
                [o.claimed.attempt for o in unsettled],
                [o.status for o in unsettled],
            )
            recorded = {row["id"] for row in rows}
        # After the UPDATE, which waited for any release of these rows to commit: the sweeper's unknown attempt
        # (if it released the lease) is visible and gives way to the real outcome. Only outcomes near or past their
        # lease need the statement (a margin for clocks that disagree).
        late = [
            o.claimed
            for o in outcomes
            if o.claimed.lease_until <= now + LATE_MARGIN and o.claimed.delivery_id not in recorded
        ]
        if late:
            await connection.execute(
                _RESOLVE_UNKNOWN,
                [c.delivery_id for c in late],
                [c.attempt for c in late],
                [c.claimed_at for c in late],
            )
        attempts = [(o.claimed, a) for o in outcomes if o.claimed.delivery_id not in recorded for a in o.attempts]
        if attempts:
            await connection.execute(
                _INSERT_ATTEMPTS,
                [c.delivery_id for c, _ in attempts],
                [c.attempt for c, _ in attempts],
                [a.provider for _, a in attempts],
                [a.outcome for _, a in attempts],
                [_text(a.error) for _, a in attempts],
                [a.started_at for _, a in attempts],
                [a.duration_ms for _, a in attempts],
            )
        await refresh_statuses(connection, {o.claimed.notification_id for o in outcomes}, now)
    return settled | recorded


async def refresh_statuses(
    connection: asyncpg.Connection, notification_ids: Iterable[uuid.UUID], now: datetime
) -> None:
    """Store each notification's status as derived from its deliveries' (the lifecycle's rule), in the caller's
    transaction, which holds the notifications' locks."""
    rows = await connection.fetch(_DELIVERY_STATUSES, list(notification_ids))
    await connection.execute(
        _SET_STATUSES,
        [row["notification_id"] for row in rows],
        [derive_notification_status(row["statuses"]) for row in rows],
        now,
    )


# A lease that expired: the delivery goes back to the relay, and the attempt its worker made (or was about to
# make) is logged as unknown, with the claim's time as its start: the provider may have taken it, so the next attempt
# may be a duplicate, and the history says why. Locked in id order, a batch at a time.
_RELEASE_EXPIRED = f"""
WITH expired AS (
    SELECT id, updated_at AS claimed_at FROM deliveries
    WHERE status = {sql(D.SENDING)} AND lease_until < $1
    ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE deliveries d
    SET status = {sql(D.QUEUED)}, published_at = NULL, lease_until = NULL, status_reason = 'lease_expired',
        updated_at = $1
    FROM expired e WHERE d.id = e.id
    RETURNING d.id, d.attempt_count, d.provider, e.claimed_at
)
INSERT INTO delivery_attempts (delivery_id, attempt_number, provider, outcome, error, started_at, duration_ms)
SELECT id, attempt_count, provider, {sql(AttemptOutcome.UNKNOWN)}, $3, claimed_at, 0 FROM released
RETURNING delivery_id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input
LEASE_EXPIRED_ERROR = "lease expired: the worker stopped before it recorded an outcome"

# Published, then neither claimed nor finished for too long: its message was lost on the way (a queue deleted, a
# message dead-lettered by the broker itself). Published again; if the old message turns up after all, the claim
# lets only one of the two through.
_REPUBLISH_STALE = f"""
UPDATE deliveries d
SET status = {sql(D.QUEUED)}, published_at = NULL, status_reason = 'republished', updated_at = $1
WHERE d.id IN (
    SELECT id FROM deliveries
    WHERE status IN ({sql(D.QUEUED, D.RETRYING)}) AND published_at IS NOT NULL AND published_at < $2
        AND due_at < $2
    ORDER BY id LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING d.id
"""  # noqa: S608 - the statuses come from the lifecycle's enums, never from input


async def release_expired_leases(connection: asyncpg.Connection, *, limit: int = 500) -> int:
    """Deliveries stuck in SENDING past their lease (a worker died mid-send) go back to the relay, which publishes
    them again, each with its unfinished attempt logged as unknown. Returns how many, at most `limit`."""
    rows = await connection.fetch(_RELEASE_EXPIRED, utcnow(), limit, LEASE_EXPIRED_ERROR)
    return len(rows)


async def republish_stale(connection: asyncpg.Connection, *, older_than_s: float, limit: int = 500) -> int:
    """Deliveries published (or due back from a retry tier) more than `older_than_s` ago and still neither claimed
    nor finished go back to the relay. Returns how many, at most `limit`."""
    now = utcnow()
    rows = await connection.fetch(_REPUBLISH_STALE, now, now - timedelta(seconds=older_than_s), limit)
    return len(rows)
