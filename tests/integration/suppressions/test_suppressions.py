"""SuppressionService and the accept: a project's suppressed addresses are skipped with their reason, the rest of
the notification goes out as usual, and each project has its own list."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from clarion.keys.scopes import Scope
from clarion.v1 import (
    common_pb2,
    notifications_pb2,
    suppressions_pb2,
    suppressions_pb2_grpc,
    templates_pb2,
    users_pb2,
)
from tests.integration.auth.conftest import channel_with
from tests.integration.conftest import RunningClarion
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration

EMAIL, SMS = common_pb2.CHANNEL_EMAIL, common_pb2.CHANNEL_SMS
SKIPPED, QUEUED = notifications_pb2.DELIVERY_STATUS_SKIPPED, notifications_pb2.DELIVERY_STATUS_QUEUED


def service(channel: grpc.aio.Channel) -> Any:
    return suppressions_pb2_grpc.SuppressionServiceStub(channel)


async def suppress(stub: Any, channel: int, address: str, **fields: Any) -> suppressions_pb2.Suppression:
    request = suppressions_pb2.CreateSuppressionRequest(
        suppression=suppressions_pb2.Suppression(channel=channel, address=address, **fields)
    )
    created: suppressions_pb2.Suppression = await stub.CreateSuppression(request, timeout=10)
    return created


async def test_suppressions_are_added_listed_and_lifted(clarion: RunningClarion) -> None:
    stub = service(clarion.channel)
    first = await suppress(stub, EMAIL, "Ada.Lovelace@Example.COM", detail="asked by phone")
    assert (first.address, first.reason) == ("ada.lovelace@example.com", suppressions_pb2.SUPPRESSION_REASON_MANUAL)
    # Again, in another case and for another reason: the first entry stands.
    again = await suppress(
        stub, EMAIL, "ADA.LOVELACE@example.com", reason=suppressions_pb2.SUPPRESSION_REASON_HARD_BOUNCE
    )
    assert again == first
    await suppress(stub, SMS, "+14155550123", reason=suppressions_pb2.SUPPRESSION_REASON_UNSUBSCRIBE)
    for n in range(3):
        await suppress(stub, EMAIL, f"n{n}@example.com")

    listed: list[str] = []
    token = ""
    while True:
        page = await stub.ListSuppressions(
            suppressions_pb2.ListSuppressionsRequest(page_size=2, page_token=token), timeout=10
        )
        listed += [s.address for s in page.suppressions]
        if not (token := page.next_page_token):
            break
    assert listed == ["n2@example.com", "n1@example.com", "n0@example.com", "+14155550123", "ada.lovelace@example.com"]
    texts = await stub.ListSuppressions(suppressions_pb2.ListSuppressionsRequest(channel=SMS), timeout=10)
    assert [(s.address, s.reason) for s in texts.suppressions] == [
        ("+14155550123", suppressions_pb2.SUPPRESSION_REASON_UNSUBSCRIBE)
    ]

    await stub.DeleteSuppression(
        suppressions_pb2.DeleteSuppressionRequest(channel=EMAIL, address="ada.lovelace@EXAMPLE.com"), timeout=10
    )
    code, status = await rpc_error(
        stub.DeleteSuppression(
            suppressions_pb2.DeleteSuppressionRequest(channel=EMAIL, address="ada.lovelace@example.com")
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert status.message == "ada.lovelace@example.com is not suppressed on email"


@pytest.mark.parametrize(
    ("suppression", "field"),
    [
        ({"channel": common_pb2.CHANNEL_PUSH, "address": "x"}, "suppression.channel"),
        ({"channel": EMAIL, "address": ""}, "suppression.address"),
        ({"channel": EMAIL, "address": "not an address"}, "suppression.address"),
        ({"channel": SMS, "address": "4155550123"}, "suppression.address"),
        ({"channel": EMAIL, "address": "a@example.com", "detail": "x" * 501}, "suppression.detail"),
        ({"channel": EMAIL, "address": "a@example.com", "reason": 99}, "suppression.reason"),
    ],
)
async def test_a_bad_suppression_names_its_field(
    clarion: RunningClarion, suppression: dict[str, Any], field: str
) -> None:
    request = suppressions_pb2.CreateSuppressionRequest(suppression=suppressions_pb2.Suppression(**suppression))
    code, status = await rpc_error(service(clarion.channel).CreateSuppression(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)


async def _template_and_user(clarion: RunningClarion) -> str:
    await clarion.templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(
            template={"template_key": "both", "subject": "Hi", "body": "Body", "sms_body": "Text", "push_title": "P"}
        ),
        timeout=10,
    )
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": "Grace@Example.com", "phone_number": "+14155550199"}),
        timeout=10,
    )
    await clarion.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": "t", "platform": "DEVICE_PLATFORM_IOS"}),
        timeout=10,
    )
    return str(user.user_id)


def _statuses(notification: notifications_pb2.Notification) -> dict[int, tuple[int, str]]:
    return {d.channel: (d.status, d.status_reason) for d in notification.deliveries}


async def test_a_send_to_a_suppressed_address_skips_that_channel_only(clarion: RunningClarion) -> None:
    user_id = await _template_and_user(clarion)
    stub = service(clarion.channel)
    await suppress(stub, EMAIL, "grace@example.com", reason=suppressions_pb2.SUPPRESSION_REASON_HARD_BOUNCE)
    sent = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="both"), timeout=10
    )
    answered = _statuses(sent.notification)
    assert answered[EMAIL] == (SKIPPED, "suppressed_hard_bounce")
    assert answered[SMS] == (QUEUED, "")
    assert answered[common_pb2.CHANNEL_PUSH] == (QUEUED, "")
    # What was recorded is what the answer said.
    stored = await clarion.notifications.GetNotification(
        notifications_pb2.GetNotificationRequest(notification_id=sent.notification.notification_id), timeout=10
    )
    assert _statuses(stored) == answered

    # Texts too, and a batch looks every recipient up at once.
    await suppress(stub, SMS, "+14155550199", reason=suppressions_pb2.SUPPRESSION_REASON_UNSUBSCRIBE)
    batch = await clarion.notifications.BatchSendNotifications(
        notifications_pb2.BatchSendNotificationsRequest(
            requests=[notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="both")]
        ),
        timeout=10,
    )
    [result] = batch.results
    assert _statuses(result.response.notification)[SMS] == (SKIPPED, "suppressed_unsubscribe")

    # Lifted: email goes out again.
    await stub.DeleteSuppression(
        suppressions_pb2.DeleteSuppressionRequest(channel=EMAIL, address="GRACE@example.com"), timeout=10
    )
    again = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="both"), timeout=10
    )
    assert _statuses(again.notification)[EMAIL] == (QUEUED, "")


async def test_each_project_has_its_own_list(clarion: RunningClarion) -> None:
    user_id = await _template_and_user(clarion)
    async with clarion.resources.fast.connection() as connection:
        await connection.execute("INSERT INTO projects (id, name) VALUES ('p3', 'Three') ON CONFLICT DO NOTHING")
    async with channel_with(clarion.address, await clarion.make_key(Scope.SEND, project="p3")) as other:
        await suppress(service(other), EMAIL, "grace@example.com")
        listed = await service(other).ListSuppressions(suppressions_pb2.ListSuppressionsRequest(), timeout=10)
        assert [s.address for s in listed.suppressions] == ["grace@example.com"]
    # The default project's list is empty, and its sends are not held back by p3's.
    mine = await service(clarion.channel).ListSuppressions(suppressions_pb2.ListSuppressionsRequest(), timeout=10)
    assert not mine.suppressions
    sent = await clarion.notifications.SendNotification(
        notifications_pb2.SendNotificationRequest(user_id=user_id, template_key="both"), timeout=10
    )
    assert _statuses(sent.notification)[EMAIL] == (QUEUED, "")
    # A read key lists, and may not add.
    async with channel_with(clarion.address, await clarion.make_key(Scope.READ)) as reader:
        await service(reader).ListSuppressions(suppressions_pb2.ListSuppressionsRequest(), timeout=10)
        code, _ = await rpc_error(
            service(reader).CreateSuppression(
                suppressions_pb2.CreateSuppressionRequest(suppression={"channel": EMAIL, "address": "x@example.com"})
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
