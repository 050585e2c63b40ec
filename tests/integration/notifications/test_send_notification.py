"""SendNotification, Get/List/Cancel against real PostgreSQL, calling the real User and Template services."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from sqlalchemy import func, select, update

from clarion.delivery import store
from clarion.notifications import models as m
from clarion.v1 import common_pb2, notifications_pb2, templates_pb2, users_pb2
from tests.helpers import status_detail, without_content
from tests.integration.conftest import RunningClarion
from tests.integration.templates.test_template_service import SEED_TEMPLATE
from tests.integration.users.test_user_service import SEED_USER, rpc_error, violations

pytestmark = pytest.mark.integration


@pytest.fixture(params=["grpc", "in_process"])
async def clarion(request: pytest.FixtureRequest, start_clarion: Callable[..., Any]) -> RunningClarion:
    """Every test here twice: NotificationService calling UserService and TemplateService over gRPC (as in
    Kubernetes), and in process (as `clarion serve all` does). Clients see the same answers either way."""
    running: RunningClarion = await start_clarion(in_process=request.param == "in_process")
    return running


SEED_DATA = {"app_name": "MyApp", "new_updates": "10", "digest_link": "https://example.com/digest"}


async def seed(clarion: RunningClarion) -> str:
    """The seed system's user and template; returns the user id."""
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=SEED_TEMPLATE), timeout=10)
    return str(user.user_id)


def send_request(user_id: str, **fields: Any) -> notifications_pb2.SendNotificationRequest:
    request = notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="WEEKLY_DIGEST", **fields)
    if "message_data" not in fields:
        request.message_data.update(SEED_DATA)
    return request


async def count_notifications(clarion: RunningClarion) -> int:
    async with clarion.resources.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(m.NotificationRow))).scalar_one())


async def test_the_seed_request_is_accepted_durably(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    response = await clarion.notifications.SendNotification(send_request(user_id), timeout=10)
    notification = response.notification
    assert response.replayed is False
    assert uuid.UUID(notification.notification_id)
    assert notification.name == f"notifications/{notification.notification_id}"
    assert notification.status == notifications_pb2.NOTIFICATION_STATUS_ACCEPTED
    assert notification.template_version == 1, "the version checked at accept is the one sent"
    assert notification.priority == notifications_pb2.PRIORITY_NORMAL
    assert dict(notification.message_data) == SEED_DATA
    fetched = await clarion.notifications.GetNotification(
        notifications_pb2.GetNotificationRequest(notification_id=notification.notification_id), timeout=10
    )
    assert without_content(fetched) == notification
    assert fetched.deliveries[0].email.subject, "GetNotification alone adds what each delivery sends"
    assert await count_notifications(clarion) == 1


async def test_a_future_send_at_is_scheduled(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
    response = await clarion.notifications.SendNotification(send_request(user_id, send_at=later), timeout=10)
    assert response.notification.status == notifications_pb2.NOTIFICATION_STATUS_SCHEDULED
    assert response.notification.send_at.seconds == later.seconds


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "bad/id"}, "user_id"),
        ({"template_key": ""}, "template_key"),
        ({"channels": [0]}, "channels[0]"),
        ({"channels": [9]}, "channels[0]"),
        ({"priority": 42}, "priority"),
        ({"locale": "no such locale"}, "locale"),
        ({"template_version": -1}, "template_version"),
        ({"request_id": "x" * 300}, "request_id"),
    ],
)
async def test_bad_requests_name_the_field(clarion: RunningClarion, fields: dict[str, Any], field: str) -> None:
    user_id = await seed(clarion)
    request = send_request(user_id)
    for name, value in fields.items():
        if name == "channels":
            request.channels.extend(value)
        else:
            setattr(request, name, value)
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)
    assert await count_notifications(clarion) == 0


async def test_data_size_and_schedule_limits(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    big = send_request(user_id)
    big.message_data.update({"blob": "x" * (65 * 1024)})
    code, status = await rpc_error(clarion.notifications.SendNotification(big, timeout=10))
    assert (code, list(violations(status))) == (grpc.StatusCode.INVALID_ARGUMENT, ["message_data"])
    far = timestamp_pb2.Timestamp()
    far.FromDatetime(datetime.now(UTC) + timedelta(days=400))
    code, status = await rpc_error(
        clarion.notifications.SendNotification(send_request(user_id, send_at=far), timeout=10)
    )
    assert "send_at" in violations(status)


async def test_unknown_user_template_and_missing_data_are_refused(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    code, status = await rpc_error(clarion.notifications.SendNotification(send_request("ghost"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "USER_NOT_FOUND"

    request = send_request(user_id)
    request.template_key = "NOPE"
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_NOT_FOUND"

    partial = send_request(user_id, message_data={"app_name": "MyApp"})
    code, status = await rpc_error(clarion.notifications.SendNotification(partial, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(status)) == {"message_data.new_updates", "message_data.digest_link"}

    # A null (what a client library that drops protobuf Value kinds sends) is refused as a missing value is.
    nulls = send_request(user_id, message_data={**SEED_DATA, "new_updates": None})
    code, status = await rpc_error(clarion.notifications.SendNotification(nulls, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(status)) == {"message_data.new_updates"}
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "NULL_TEMPLATE_VARIABLES"

    await clarion.templates.DeleteTemplate(
        templates_pb2.DeleteTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    code, status = await rpc_error(clarion.notifications.SendNotification(send_request(user_id), timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "TEMPLATE_DELETED"
    assert await count_notifications(clarion) == 0


async def test_asking_only_for_a_channel_the_template_lacks_is_refused(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    request = send_request(user_id)
    request.channels.append(2)  # push; the seed template is email only
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "channels" in violations(status)


async def test_same_key_same_request_replays_the_original(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    first = await clarion.notifications.SendNotification(send_request(user_id, request_id="key-1"), timeout=10)
    again = await clarion.notifications.SendNotification(send_request(user_id, request_id="key-1"), timeout=10)
    assert again.replayed is True
    assert again.notification.notification_id == first.notification.notification_id
    by_header = await clarion.notifications.SendNotification(
        send_request(user_id), metadata=[("x-idempotency-key", "key-1")], timeout=10
    )
    assert by_header.notification.notification_id == first.notification.notification_id
    assert await count_notifications(clarion) == 1


async def test_a_retry_is_answered_by_the_original_after_its_user_and_template_went(
    clarion: RunningClarion,
) -> None:
    user_id = await seed(clarion)
    first = await clarion.notifications.SendNotification(send_request(user_id, request_id="key-gone"), timeout=10)
    await clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id=user_id), timeout=10)
    await clarion.templates.DeleteTemplate(
        templates_pb2.DeleteTemplateRequest(template_key="WEEKLY_DIGEST"), timeout=10
    )
    again = await clarion.notifications.SendNotification(send_request(user_id, request_id="key-gone"), timeout=10)
    assert again.replayed is True
    assert again.notification.notification_id == first.notification.notification_id
    code, _ = await rpc_error(clarion.notifications.SendNotification(send_request(user_id), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND, "without the key, the same request now fails"
    assert await count_notifications(clarion) == 1


async def test_a_number_json_cannot_hold_is_invalid_argument(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    request = send_request(user_id, request_id="nan")
    request.message_data.update({"ratio": float("nan")})
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "message_data" in violations(status)
    assert await count_notifications(clarion) == 0


@pytest.mark.parametrize("data", [{"app_name": "a\x00b"}, {"k\x00": 1}, {"items": [{"deep": ["\x00"]}]}])
async def test_a_nul_anywhere_in_the_data_is_invalid_argument(clarion: RunningClarion, data: dict[str, Any]) -> None:
    user_id = await seed(clarion)
    request = send_request(user_id, request_id="nul")
    request.message_data.update(data)
    code, status = await rpc_error(clarion.notifications.SendNotification(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "message_data" in violations(status)
    assert await count_notifications(clarion) == 0


async def test_same_key_different_request_is_already_exists(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    await clarion.notifications.SendNotification(send_request(user_id, request_id="key-2"), timeout=10)
    different = send_request(user_id, request_id="key-2", message_data={**SEED_DATA, "app_name": "Other"})
    code, status = await rpc_error(clarion.notifications.SendNotification(different, timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    info = status_detail(status, error_details_pb2.ErrorInfo)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED"
    assert info.metadata["idempotency_key"] == "key-2"
    code, _ = await rpc_error(
        clarion.notifications.SendNotification(
            send_request(user_id, request_id="a"), metadata=[("x-idempotency-key", "b")], timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_concurrent_requests_with_one_key_make_exactly_one_notification(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    responses = await asyncio.gather(
        *(
            clarion.notifications.SendNotification(send_request(user_id, request_id="burst"), timeout=60)
            for _ in range(200)
        )
    )
    ids = {r.notification.notification_id for r in responses}
    assert len(ids) == 1
    assert sum(not r.replayed for r in responses) == 1
    assert await count_notifications(clarion) == 1


async def test_cancel_a_scheduled_notification(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    sent = await clarion.notifications.SendNotification(send_request(user_id, send_at=later), timeout=10)
    cancel = notifications_pb2.CancelNotificationRequest(notification_id=sent.notification.notification_id)
    cancelled = await clarion.notifications.CancelNotification(cancel, timeout=10)
    assert cancelled.status == notifications_pb2.NOTIFICATION_STATUS_CANCELLED
    code, status = await rpc_error(clarion.notifications.CancelNotification(cancel, timeout=10))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "NOTIFICATION_NOT_CANCELLABLE"
    code, _ = await rpc_error(
        clarion.notifications.CancelNotification(
            notifications_pb2.CancelNotificationRequest(notification_id=str(uuid.uuid4())), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND


async def test_get_unknown_or_malformed_id_is_not_found(clarion: RunningClarion) -> None:
    for notification_id in (str(uuid.uuid4()), "not-a-uuid"):
        code, _ = await rpc_error(
            clarion.notifications.GetNotification(
                notifications_pb2.GetNotificationRequest(notification_id=notification_id), timeout=10
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND


async def test_list_filters_and_pages_newest_first(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    other = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "o@example.com"}), timeout=10
    )
    sent = [
        (await clarion.notifications.SendNotification(send_request(user_id), timeout=10)).notification.notification_id
        for _ in range(5)
    ]
    await clarion.notifications.SendNotification(send_request(other.user_id), timeout=10)
    seen: list[str] = []
    token = ""
    while True:
        page = await clarion.notifications.ListNotifications(
            notifications_pb2.ListNotificationsRequest(user_id=user_id, page_size=2, page_token=token), timeout=10
        )
        seen += [n.notification_id for n in page.notifications]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(sent))
    accepted = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(status=notifications_pb2.NOTIFICATION_STATUS_ACCEPTED), timeout=10
    )
    assert len(accepted.notifications) == 6
    none_sent = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(status=notifications_pb2.NOTIFICATION_STATUS_SENT), timeout=10
    )
    assert list(none_sent.notifications) == []
    first = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(user_id=user_id, page_size=1), timeout=10
    )
    code, status = await rpc_error(
        clarion.notifications.ListNotifications(
            notifications_pb2.ListNotificationsRequest(page_size=1, page_token=first.next_page_token), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in violations(status)


async def test_get_shows_the_content_each_delivery_sends_without_its_recipient(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    sent = (await clarion.notifications.SendNotification(send_request(user_id), timeout=10)).notification

    got = await clarion.notifications.GetNotification(
        notifications_pb2.GetNotificationRequest(notification_id=sent.notification_id), timeout=10
    )
    listed = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(user_id=user_id), timeout=10
    )

    (email,) = (d for d in got.deliveries if d.channel == common_pb2.CHANNEL_EMAIL)
    assert email.email.subject == "Your Weekly MyApp Digest: 10 new items!"
    assert "https://example.com/digest" in email.email.body
    assert "View Digest" in email.email.html_body
    assert SEED_USER.email_address not in str(got)  # the recipient stays the workers' business
    # A page of many notifications carries no content.
    assert all(not d.HasField("email") for n in listed.notifications for d in n.deliveries)


async def test_list_filters_by_the_time_accepted(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    sent = [
        (await clarion.notifications.SendNotification(send_request(user_id), timeout=10)).notification for _ in range(3)
    ]
    # The middle one's acceptance time, read back: the window [it, the last one's) holds exactly it and no other.
    middle, last = sent[1].create_time, sent[2].create_time

    window = notifications_pb2.ListNotificationsRequest(user_id=user_id, create_time_start=middle, create_time_end=last)
    listed = await clarion.notifications.ListNotifications(window, timeout=10)
    since = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(user_id=user_id, create_time_start=middle, page_size=1), timeout=10
    )
    rest = await clarion.notifications.ListNotifications(
        notifications_pb2.ListNotificationsRequest(
            user_id=user_id, create_time_start=middle, page_size=1, page_token=since.next_page_token
        ),
        timeout=10,
    )

    assert [n.notification_id for n in listed.notifications] == [sent[1].notification_id]
    assert [n.notification_id for n in [*since.notifications, *rest.notifications]] == [
        sent[2].notification_id,
        sent[1].notification_id,
    ]
    assert not rest.next_page_token
    backwards = notifications_pb2.ListNotificationsRequest(create_time_start=last, create_time_end=middle)
    code, status = await rpc_error(clarion.notifications.ListNotifications(backwards, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "create_time_end" in violations(status)
    # A page token belongs to its window.
    code, status = await rpc_error(
        clarion.notifications.ListNotifications(
            notifications_pb2.ListNotificationsRequest(user_id=user_id, page_token=since.next_page_token), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in violations(status)


async def test_an_expired_key_is_forgotten_and_pruned(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    first = await clarion.notifications.SendNotification(send_request(user_id, request_id="old-key"), timeout=10)
    async with clarion.resources.sessions.begin() as session:
        await session.execute(update(m.IdempotencyKeyRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    # Past its lifetime the key means nothing: the same key with another request is a new notification.
    other = send_request(user_id, request_id="old-key", message_data={**SEED_DATA, "app_name": "Later"})
    second = await clarion.notifications.SendNotification(other, timeout=10)
    assert second.replayed is False
    assert second.notification.notification_id != first.notification.notification_id

    async with clarion.resources.sessions.begin() as session:
        await session.execute(update(m.IdempotencyKeyRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    async with clarion.resources.fast.connection() as connection:
        assert await store.prune_keys(connection) == 1
    async with clarion.resources.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(m.IdempotencyKeyRow))).scalar_one() == 0


async def test_the_accepting_request_id_travels_with_the_notification(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    response = await clarion.notifications.SendNotification(
        send_request(user_id), metadata=[("x-request-id", "trace-abc-123")], timeout=10
    )
    async with clarion.resources.sessions() as session:
        row = await session.get(m.NotificationRow, uuid.UUID(response.notification.notification_id))
    assert row is not None
    assert row.trace_request_id == "trace-abc-123"
