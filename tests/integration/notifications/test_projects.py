"""Projects: a key sees and acts on its own project's notifications, dead letters and idempotency keys only."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from clarion.delivery.lifecycle import DeliveryStatus, NotificationStatus
from clarion.keys.manage import create_project
from clarion.keys.scopes import DEFAULT_PROJECT, Scope
from clarion.notifications import models as m
from clarion.v1 import notifications_pb2, notifications_pb2_grpc
from tests.helpers import notification_row
from tests.integration.auth.conftest import channel_with
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_send_notification import seed, send_request
from tests.integration.users.test_user_service import rpc_error

pytestmark = pytest.mark.integration

SECOND = "second"


async def dead_letter(clarion: RunningClarion, project_id: str) -> str:
    """A delivery of `project_id` that failed for good; returns its id."""
    notification_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    async with clarion.resources.sessions.begin() as session:
        session.add(notification_row(id=notification_id, project_id=project_id, status=NotificationStatus.FAILED))
        await session.flush()
        session.add(
            m.DeliveryRow(
                id=delivery_id,
                notification_id=notification_id,
                channel="email",
                status=DeliveryStatus.FAILED,
                payload={},
                due_at=now,
                provider="file",
                created_at=now,
                updated_at=now,
            )
        )
    return str(delivery_id)


# Fixed for the run, so that the same request sent twice is the same request.
LATER = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)


@contextlib.asynccontextmanager
async def notifications_as(clarion: RunningClarion, api_key: str) -> AsyncIterator[Any]:
    """NotificationService as the holder of `api_key` sees it."""
    async with channel_with(clarion.address, api_key) as channel:
        yield notifications_pb2_grpc.NotificationServiceStub(channel)


def scheduled(user_id: str, key: str) -> notifications_pb2.SendNotificationRequest:
    """A send two hours ahead (so it can still be cancelled) with the idempotency key `key`."""
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(LATER)
    return send_request(user_id, request_id=key, send_at=later)


async def test_a_second_projects_key_cannot_see_cancel_or_replay_the_first_projects_work(
    clarion: RunningClarion,
) -> None:
    await create_project(clarion.resources.sessions, project_id=SECOND, name="Second team")
    user_id = await seed(clarion)
    first_dead = await dead_letter(clarion, DEFAULT_PROJECT)
    second_dead = await dead_letter(clarion, SECOND)
    first_key = await clarion.make_key(Scope.SEND, name="first")
    second_key = await clarion.make_key(Scope.SEND, name="second", project=SECOND)
    async with notifications_as(clarion, first_key) as first, notifications_as(clarion, second_key) as second:
        sent = (await first.SendNotification(scheduled(user_id, "order-1"), timeout=10)).notification
        get = notifications_pb2.GetNotificationRequest(notification_id=sent.notification_id)

        # Reading: NOT_FOUND, as for an id that does not exist, and absent from every list.
        code, status = await rpc_error(second.GetNotification(get, timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        listed = await second.ListNotifications(notifications_pb2.ListNotificationsRequest(), timeout=10)
        assert sent.notification_id not in [n.notification_id for n in listed.notifications]
        letters = await second.ListDeadLetters(notifications_pb2.ListDeadLettersRequest(), timeout=10)
        assert [d.delivery_id for d in letters.dead_letters] == [second_dead]

        # Acting: cancel is NOT_FOUND, replay finds nothing to replay; the first project's work is untouched.
        cancel = notifications_pb2.CancelNotificationRequest(notification_id=sent.notification_id)
        code, _ = await rpc_error(second.CancelNotification(cancel, timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        replay = notifications_pb2.ReplayDeadLettersRequest(delivery_ids=[first_dead])
        replayed = await second.ReplayDeadLetters(replay, timeout=10)
        assert (list(replayed.delivery_ids), list(replayed.not_replayed_ids)) == ([], [first_dead])
        again = await second.ReplayDeadLetters(notifications_pb2.ReplayDeadLettersRequest(all=True), timeout=10)
        assert list(again.delivery_ids) == [second_dead]
        assert (await first.GetNotification(get, timeout=10)).status == notifications_pb2.NOTIFICATION_STATUS_SCHEDULED
        first_letters = await first.ListDeadLetters(notifications_pb2.ListDeadLettersRequest(), timeout=10)
        assert [d.delivery_id for d in first_letters.dead_letters] == [first_dead]

        # The same idempotency key, even with the same request, is the second project's own: a new notification,
        # not a replay of the first's, not a conflict that names it.
        own = await second.SendNotification(scheduled(user_id, "order-1"), timeout=10)
        assert not own.replayed
        assert own.notification.notification_id != sent.notification_id
        repeated = await second.SendNotification(scheduled(user_id, "order-1"), timeout=10)
        assert repeated.replayed
        assert repeated.notification.notification_id == own.notification.notification_id
        # A different request under the key conflicts within the project only, naming the project's own id.
        other = send_request(user_id, request_id="order-1")
        code, status = await rpc_error(second.SendNotification(other, timeout=10))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert sent.notification_id not in str(status)
        assert (await first.SendNotification(scheduled(user_id, "order-1"), timeout=10)).replayed


async def test_an_operator_key_reads_every_project_but_acts_in_its_own(clarion: RunningClarion) -> None:
    await create_project(clarion.resources.sessions, project_id=SECOND, name="Second team")
    user_id = await seed(clarion)
    second_key = await clarion.make_key(Scope.SEND, name="second", project=SECOND)
    operator_key = await clarion.make_key(Scope.SEND, Scope.READ_ALL_PROJECTS, name="support")
    async with notifications_as(clarion, second_key) as second, notifications_as(clarion, operator_key) as operator:
        sent = (await second.SendNotification(scheduled(user_id, "k"), timeout=10)).notification
        get = notifications_pb2.GetNotificationRequest(notification_id=sent.notification_id)
        assert (await operator.GetNotification(get, timeout=10)).notification_id == sent.notification_id
        listed = await operator.ListNotifications(notifications_pb2.ListNotificationsRequest(), timeout=10)
        assert sent.notification_id in [n.notification_id for n in listed.notifications]
        cancel = notifications_pb2.CancelNotificationRequest(notification_id=sent.notification_id)
        code, _ = await rpc_error(operator.CancelNotification(cancel, timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
