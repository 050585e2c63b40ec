"""The lifecycle's moves are enforced in every migrated test database (tests/helpers.LIFECYCLE_GUARD_SQL): a status
change outside DELIVERY_MOVES, made by any code any test runs, fails. Here the guard itself is tested."""

from __future__ import annotations

import asyncpg
import pytest

from clarion.delivery.lifecycle import DeliveryStatus
from tests.integration.conftest import RunningClarion
from tests.integration.delivery.test_outcomes import make_notification

pytestmark = pytest.mark.integration


async def test_a_move_the_lifecycle_does_not_list_is_refused(clarion: RunningClarion) -> None:
    [delivery] = await make_notification(clarion, ("email",))
    async with clarion.resources.fast.connection() as connection:
        # Legal: claimed, then sent.
        for status in (DeliveryStatus.SENDING, DeliveryStatus.SENT):
            await connection.execute("UPDATE deliveries SET status = $2 WHERE id = $1", delivery, status)
        # Not legal: a sent delivery never goes back to the queue.
        with pytest.raises(asyncpg.RaiseError, match="illegal delivery move sent -> queued"):
            await connection.execute("UPDATE deliveries SET status = $2 WHERE id = $1", delivery, DeliveryStatus.QUEUED)
        # A test that must set up an impossible history says so.
        async with connection.transaction():
            await connection.execute("SET LOCAL clarion.unguarded = 'on'")
            await connection.execute("UPDATE deliveries SET status = $2 WHERE id = $1", delivery, DeliveryStatus.QUEUED)
