"""Batched claims and outcomes on real PostgreSQL: a delivery is claimed once however often it is asked for, and
the notification's status follows its deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from clarion.delivery.consumer import DeliveryWorker
from clarion.delivery.lifecycle import AttemptOutcome, DeliveryStatus, NotificationStatus
from clarion.delivery.store import (
    Attempt,
    Claimed,
    Outcome,
    claim_many,
    finish_many,
    release_expired_leases,
    republish_stale,
)
from clarion.notifications import models as m
from tests.helpers import notification_row
from tests.integration.conftest import RunningClarion

pytestmark = pytest.mark.integration


async def make_notification(clarion: RunningClarion, channels: tuple[str, ...]) -> list[uuid.UUID]:
    """A dispatched notification with one queued delivery per channel; returns the delivery ids."""
    now = datetime.now(UTC)
    notification = notification_row()
    deliveries = [
        m.DeliveryRow(
            id=uuid.uuid4(),
            notification_id=notification.id,
            channel=channel,
            status=DeliveryStatus.QUEUED,
            payload={"to": "ada@example.com"},
            due_at=now,
            created_at=now,
            updated_at=now,
        )
        for channel in channels
    ]
    async with clarion.resources.sessions.begin() as session:
        session.add(notification)
        await session.flush()
        session.add_all(deliveries)
    return [d.id for d in deliveries]


async def notification_status(clarion: RunningClarion, delivery_id: uuid.UUID) -> str:
    async with clarion.resources.sessions() as session:
        delivery = await session.get(m.DeliveryRow, delivery_id)
        assert delivery is not None
        notification = await session.get(m.NotificationRow, delivery.notification_id)
        assert notification is not None
        return notification.status


async def test_a_batch_claims_each_delivery_once(clarion: RunningClarion) -> None:
    first, second = await make_notification(clarion, ("email", "push"))
    unknown = uuid.uuid4()
    async with clarion.resources.fast.connection() as connection:
        claimed = await claim_many(connection, [first, second, first, unknown], lease_s=30)
        again = await claim_many(connection, [first], lease_s=30)
    assert [c.delivery_id if c else None for c in claimed] == [first, second, None, None]
    assert claimed[0] is not None
    assert claimed[0].attempt == 1
    assert claimed[0].payload == {"to": "ada@example.com"}
    assert claimed[0].user_id == "ada"
    assert again == [None], "a delivery being sent is not claimed again"


async def test_outcomes_set_the_deliveries_and_the_notification(clarion: RunningClarion) -> None:
    email, push = await make_notification(clarion, ("email", "push"))
    now = datetime.now(UTC)
    async with clarion.resources.fast.connection() as connection:
        claimed_email, claimed_push = await claim_many(connection, [email, push], lease_s=30)
        assert claimed_email is not None
        assert claimed_push is not None
        sent = Attempt("file", "succeeded", "", now, 1.5)
        await finish_many(
            connection, [Outcome(claimed_email, [sent], DeliveryStatus.SENT, provider="file", provider_message_id="x")]
        )
        assert await notification_status(clarion, email) == NotificationStatus.IN_PROGRESS, (
            "the push is still being sent"
        )
        failed = Attempt("simulated", "permanent_failure", "bad token", now, 2.0)
        await finish_many(
            connection,
            [Outcome(claimed_push, [failed], DeliveryStatus.FAILED, reason="bad token", provider="simulated")],
        )
    assert await notification_status(clarion, email) == NotificationStatus.PARTIALLY_SENT
    async with clarion.resources.sessions() as session:
        row = await session.get(m.DeliveryRow, email)
        assert row is not None
        assert (row.status, row.provider, row.provider_message_id, row.lease_until) == (
            DeliveryStatus.SENT,
            "file",
            "x",
            None,
        )
        assert row.sent_at is not None


async def test_one_outcome_postgresql_refuses_does_not_fail_its_batch(clarion: RunningClarion) -> None:
    good, bad = (await make_notification(clarion, ("email",)))[0], (await make_notification(clarion, ("email",)))[0]
    async with clarion.resources.fast.connection() as connection:
        claimed_good, claimed_bad = await claim_many(connection, [good, bad], lease_s=30)
    assert claimed_good is not None
    assert claimed_bad is not None
    now = datetime.now(UTC)
    worker = DeliveryWorker(channel="email", fast=clarion.resources.fast)
    results = await worker._finish_batch(
        [
            Outcome(claimed_good, [Attempt("file", "succeeded", "nul \x00 stripped", now, 1.0)], DeliveryStatus.SENT),
            # Longer than the provider column: PostgreSQL refuses this one.
            Outcome(
                claimed_bad, [Attempt("p" * 40, "succeeded", "", now, 1.0)], DeliveryStatus.SENT, provider="p" * 40
            ),
        ]
    )
    assert results[0] is True
    assert isinstance(results[1], Exception), "the refused one is reported to its own handler"
    async with clarion.resources.sessions() as session:
        recorded = await session.get(m.DeliveryRow, good)
        assert recorded is not None
        assert recorded.status == DeliveryStatus.SENT
        refused = await session.get(m.DeliveryRow, bad)
        assert refused is not None
        assert refused.status == DeliveryStatus.SENDING, "left to its handler (requeued) and the sweeper"


async def attempts_of(clarion: RunningClarion, delivery_id: uuid.UUID) -> list[tuple[int, str]]:
    async with clarion.resources.fast.connection() as connection:
        rows = await connection.fetch(
            "SELECT attempt_number, outcome FROM delivery_attempts WHERE delivery_id = $1 ORDER BY id", delivery_id
        )
    return [(r["attempt_number"], r["outcome"]) for r in rows]


async def expire_lease(clarion: RunningClarion, delivery_id: uuid.UUID) -> None:
    async with clarion.resources.fast.connection() as connection:
        await connection.execute(
            "UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE id = $1", delivery_id
        )


async def test_an_outcome_recorded_after_the_sweeper_released_the_lease_still_settles_it(
    clarion: RunningClarion,
) -> None:
    [delivery] = await make_notification(clarion, ("email",))
    async with clarion.resources.fast.connection() as connection:
        [claimed] = await claim_many(connection, [delivery], lease_s=0.001)
        assert claimed is not None
        await expire_lease(clarion, delivery)
        assert await release_expired_leases(connection) == 1
        assert await attempts_of(clarion, delivery) == [(1, AttemptOutcome.UNKNOWN)]
        # The worker was only slow (PostgreSQL was away): its outcome replaces the unknown attempt and settles the
        # delivery, and the message the relay publishes again finds nothing left to claim.
        sent = Attempt("file", AttemptOutcome.SUCCEEDED, "", datetime.now(UTC), 1.0)
        settled = await finish_many(connection, [Outcome(claimed, [sent], DeliveryStatus.SENT, provider="file")])
        assert settled == {delivery}
        assert await claim_many(connection, [delivery], lease_s=30) == [None]
    assert await attempts_of(clarion, delivery) == [(1, AttemptOutcome.SUCCEEDED)]
    assert await notification_status(clarion, delivery) == NotificationStatus.SENT


async def claimed_twice(
    clarion: RunningClarion, connection: asyncpg.Connection, delivery: uuid.UUID
) -> tuple[Claimed, Claimed]:
    """Claimed, its worker cut off past the lease, taken back by the sweeper and claimed again by another worker:
    the first claim and the second."""
    [first] = await claim_many(connection, [delivery], lease_s=0.001)
    await expire_lease(clarion, delivery)
    assert await release_expired_leases(connection) == 1
    [second] = await claim_many(connection, [delivery], lease_s=30)
    assert first is not None
    assert second is not None
    return first, second


async def test_an_outcome_recorded_after_another_claim_only_logs_its_attempt(clarion: RunningClarion) -> None:
    [delivery] = await make_notification(clarion, ("email",))
    now = datetime.now(UTC)
    async with clarion.resources.fast.connection() as connection:
        first, second = await claimed_twice(clarion, connection, delivery)
        assert second.attempt == 2
        late = Outcome(
            first, [Attempt("file", AttemptOutcome.TRANSIENT_FAILURE, "503", now, 1.0)], DeliveryStatus.RETRYING
        )
        assert await finish_many(connection, [late]) == set(), "the second claim owns the delivery"
        row = await connection.fetchrow("SELECT status, attempt_count FROM deliveries WHERE id = $1", delivery)
        assert (row["status"], row["attempt_count"]) == (DeliveryStatus.SENDING, 2)
        sent = Outcome(second, [Attempt("file", AttemptOutcome.SUCCEEDED, "", now, 1.0)], DeliveryStatus.SENT)
        assert await finish_many(connection, [sent]) == {delivery}
    assert await attempts_of(clarion, delivery) == [
        (1, AttemptOutcome.TRANSIENT_FAILURE),
        (2, AttemptOutcome.SUCCEEDED),
    ]


async def test_a_published_delivery_whose_message_was_lost_is_published_again(clarion: RunningClarion) -> None:
    [lost, fresh] = await make_notification(clarion, ("email", "push"))
    async with clarion.resources.fast.connection() as connection:
        await connection.execute(
            "UPDATE deliveries SET published_at = now() - interval '1 hour', due_at = now() - interval '1 hour' "
            "WHERE id = $1",
            lost,
        )
        await connection.execute("UPDATE deliveries SET published_at = now() WHERE id = $1", fresh)
        assert await republish_stale(connection, older_than_s=60) == 1
        rows = await connection.fetch("SELECT id, published_at, status_reason FROM deliveries")
    by_id = {r["id"]: r for r in rows}
    assert by_id[lost]["published_at"] is None, "back to the relay"
    assert by_id[lost]["status_reason"] == "republished"
    assert by_id[fresh]["published_at"] is not None, "a message published a moment ago is left alone"


async def test_a_retrying_delivery_is_not_republished_before_its_message_is_due_back(
    clarion: RunningClarion,
) -> None:
    [delivery] = await make_notification(clarion, ("email",))
    now = datetime.now(UTC)
    async with clarion.resources.fast.connection() as connection:
        await connection.execute(
            "UPDATE deliveries SET published_at = now() - interval '1 hour' WHERE id = $1", delivery
        )
        [claimed] = await claim_many(connection, [delivery], lease_s=30)
        assert claimed is not None
        retry = Outcome(
            claimed,
            [Attempt("file", AttemptOutcome.TRANSIENT_FAILURE, "503", now, 1.0)],
            DeliveryStatus.RETRYING,
            retry_at=now + timedelta(minutes=10),
        )
        await finish_many(connection, [retry])
        assert await republish_stale(connection, older_than_s=60) == 0, "its message waits in a retry tier"
        await connection.execute("UPDATE deliveries SET due_at = now() - interval '2 minutes' WHERE id = $1", delivery)
        assert await republish_stale(connection, older_than_s=60) == 1, "due back long ago, and never claimed"


async def test_an_outcome_recorded_twice_counts_once(clarion: RunningClarion) -> None:
    """Run again after a commit whose answer was lost (the connection dropped), an outcome is settled once."""
    [delivery] = await make_notification(clarion, ("email",))
    async with clarion.resources.fast.connection() as connection:
        [claimed] = await claim_many(connection, [delivery], lease_s=30)
        assert claimed is not None
        outcome = Outcome(
            claimed, [Attempt("file", AttemptOutcome.SUCCEEDED, "", datetime.now(UTC), 1.0)], DeliveryStatus.SENT
        )
        assert await finish_many(connection, [outcome]) == {delivery}
        assert await finish_many(connection, [outcome]) == {delivery}, "already recorded: settled, not late"
    assert await attempts_of(clarion, delivery) == [(1, AttemptOutcome.SUCCEEDED)]


async def test_a_retry_after_the_sweeper_took_the_delivery_back_stays_in_its_sight(clarion: RunningClarion) -> None:
    """Released (unpublished), then claimed by its old message before the relay published it again: the retry
    marks it published, so the sweeper finds it again if the retry's message is lost too."""
    [delivery] = await make_notification(clarion, ("email",))
    now = datetime.now(UTC)
    async with clarion.resources.fast.connection() as connection:
        await connection.execute("UPDATE deliveries SET published_at = now() WHERE id = $1", delivery)
        _, second = await claimed_twice(clarion, connection, delivery)
        retry = Outcome(
            second,
            [Attempt("file", AttemptOutcome.TRANSIENT_FAILURE, "503", now, 1.0)],
            DeliveryStatus.RETRYING,
            retry_at=now,
        )
        assert await finish_many(connection, [retry]) == {delivery}
        row = await connection.fetchrow("SELECT status, published_at FROM deliveries WHERE id = $1", delivery)
    assert row["status"] == DeliveryStatus.RETRYING
    assert row["published_at"] is not None
