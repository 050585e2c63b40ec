"""BatchSendNotifications: up to 500 notifications in one call, each validated as SendNotification validates it,
each with its own result (its response, or its google.rpc.Status), idempotent by each request_id, all recorded in
one statement. (Over REST: tests/integration/gateway/test_rest_batch_send.py.)"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from clarion.v1 import notifications_pb2
from tests.helpers import without_content
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_send_notification import SEED_DATA, count_notifications, seed, send_request
from tests.integration.users.test_user_service import rpc_error, violations

pytestmark = pytest.mark.integration


def batch(*requests: notifications_pb2.SendNotificationRequest) -> notifications_pb2.BatchSendNotificationsRequest:
    return notifications_pb2.BatchSendNotificationsRequest(requests=list(requests))


def fields_of(status: status_pb2.Status) -> list[str]:
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return [v.field for v in bad.field_violations]
    return []


async def test_each_notification_gets_its_own_result(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    missing_variable = send_request(user_id, request_id="b-missing")
    missing_variable.message_data.Clear()
    missing_variable.message_data.update({"app_name": "MyApp"})
    no_such_template = send_request(user_id)
    no_such_template.template_key = "NO_SUCH_TEMPLATE"
    response = await clarion.notifications.BatchSendNotifications(
        batch(
            send_request(user_id, request_id="b-1"),
            send_request(user_id),
            send_request("no user!"),
            send_request("nobody-here"),
            missing_variable,
            no_such_template,
        ),
        timeout=10,
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["response", "response", "error", "error", "error", "error"]
    first, second = response.results[0].response, response.results[1].response
    assert first.notification.request_id == "b-1"
    assert first.notification.status == notifications_pb2.NOTIFICATION_STATUS_ACCEPTED
    assert [d.status for d in first.notification.deliveries] != [], "planned at accept, as SendNotification does"
    assert first.notification.notification_id != second.notification.notification_id
    bad_id, no_user, no_data, no_template = (r.error for r in response.results[2:])
    assert (bad_id.code, fields_of(bad_id)) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], ["user_id"])
    assert no_user.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert no_data.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert fields_of(no_data)
    assert all(f.startswith("message_data.") for f in fields_of(no_data))
    assert no_template.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert await count_notifications(clarion) == 2, "the failures left nothing behind; the others were accepted"
    for notification_id in (first.notification.notification_id, second.notification.notification_id):
        fetched = await clarion.notifications.GetNotification(
            notifications_pb2.GetNotificationRequest(notification_id=notification_id), timeout=10
        )
        answered = first if notification_id == first.notification.notification_id else second
        assert without_content(fetched) == answered.notification, "the answer is what was written"


async def test_each_request_id_is_an_idempotency_key_of_its_own(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    once = await clarion.notifications.BatchSendNotifications(
        batch(send_request(user_id, request_id="k-1"), send_request(user_id, request_id="k-2")), timeout=10
    )
    changed = send_request(user_id, request_id="k-2", message_data={**SEED_DATA, "app_name": "Other"})
    again = await clarion.notifications.BatchSendNotifications(
        batch(send_request(user_id, request_id="k-1"), changed, send_request(user_id, request_id="k-3")), timeout=10
    )
    replayed, reused, new = again.results
    assert replayed.response.replayed is True
    assert replayed.response.notification.notification_id == once.results[0].response.notification.notification_id
    assert reused.error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert new.response.replayed is False
    # SendNotification sees the same keys.
    single = await clarion.notifications.SendNotification(send_request(user_id, request_id="k-3"), timeout=10)
    assert (single.replayed, single.notification.notification_id) == (True, new.response.notification.notification_id)
    assert await count_notifications(clarion) == 3


async def test_a_key_twice_in_one_batch_is_refused_for_the_second(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    response = await clarion.notifications.BatchSendNotifications(
        batch(send_request(user_id, request_id="twice"), send_request(user_id, request_id="twice")), timeout=10
    )
    first, second = response.results
    assert first.WhichOneof("result") == "response"
    assert (second.error.code, fields_of(second.error)) == (grpc.StatusCode.INVALID_ARGUMENT.value[0], ["request_id"])
    assert "requests[0]" in second.error.message or "requests[0]" in str(second.error)


@pytest.mark.parametrize("size", [0, 501])
async def test_a_batch_holds_one_to_five_hundred(clarion: RunningClarion, size: int) -> None:
    user_id = await seed(clarion)
    code, status = await rpc_error(
        clarion.notifications.BatchSendNotifications(batch(*[send_request(user_id)] * size), timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests" in violations(status)


async def test_the_idempotency_header_does_not_apply_to_a_batch(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    code, status = await rpc_error(
        clarion.notifications.BatchSendNotifications(
            batch(send_request(user_id)), metadata=(("x-idempotency-key", "k"),), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-idempotency-key" in violations(status)


async def test_five_hundred_are_accepted_in_one_call(clarion: RunningClarion) -> None:
    user_id = await seed(clarion)
    requests = [send_request(user_id, request_id=f"many-{n}") for n in range(500)]
    response = await clarion.notifications.BatchSendNotifications(batch(*requests), timeout=30)
    assert [r.WhichOneof("result") for r in response.results] == ["response"] * 500
    assert [r.response.notification.request_id for r in response.results] == [f"many-{n}" for n in range(500)]
    assert await count_notifications(clarion) == 500
