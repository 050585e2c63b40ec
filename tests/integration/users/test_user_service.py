"""UserService against real PostgreSQL, through a real gRPC server and client."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clarion.v1 import users_pb2
from tests.helpers import status_detail
from tests.integration.conftest import RunningClarion

pytestmark = pytest.mark.integration

SEED_USER = users_pb2.User(
    email_address="user@example.com",
    phone_number="+1234567890",
    preferred_language="en-US",
    preferences=users_pb2.Preferences(
        email_enabled=True, push_enabled=True, quiet_hours_start="22:00", quiet_hours_end="08:00"
    ),
)


async def rpc_error(call: Any) -> tuple[grpc.StatusCode, Any]:
    """Await a call that must fail; return its code and its google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), await rpc_status.aio.from_call(call)


def violations(status: Any) -> dict[str, str]:
    bad_request = status_detail(status, error_details_pb2.BadRequest)
    return {v.field: v.description for v in bad_request.field_violations}


async def create(clarion: RunningClarion, **fields: Any) -> users_pb2.User:
    user = users_pb2.User(**fields)
    created: users_pb2.User = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=user), timeout=10)
    return created


async def test_create_the_seed_user_and_get_it_back(clarion: RunningClarion) -> None:
    created = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    assert created.user_id
    assert created.name == f"users/{created.user_id}"
    assert created.email_address == "user@example.com"
    assert created.phone_number == "+1234567890"
    assert created.preferred_language == "en-US"
    assert created.timezone == "UTC"
    assert created.preferences.quiet_hours_start == "22:00"
    assert created.create_time.seconds > 0
    fetched = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=created.user_id), timeout=10)
    assert fetched == created


async def test_create_normalizes_and_defaults(clarion: RunningClarion) -> None:
    created = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(
            user_id="ada",
            user=users_pb2.User(
                email_address="Ada@EXAMPLE.com",
                phone_number="+44 20 7946 0958",
                preferred_language="pt-br",
                timezone="Europe/Lisbon",
            ),
        ),
        timeout=10,
    )
    assert created.user_id == "ada"
    assert created.email_address == "Ada@example.com"
    assert created.phone_number == "+442079460958"
    assert created.preferred_language == "pt-BR"
    assert created.preferences.email_enabled is True
    assert created.preferences.push_enabled is True


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"email_address": "not-an-email"}, "user.email_address"),
        ({"email_address": "a@example.com\r\nBcc: victim@example.com"}, "user.email_address"),
        ({"phone_number": "4155550123"}, "user.phone_number"),
        ({"phone_number": "+999 123"}, "user.phone_number"),
        ({"preferred_language": "english!"}, "user.preferred_language"),
        ({"timezone": "Mars/Olympus"}, "user.timezone"),
        ({"timezone": "../../etc/passwd"}, "user.timezone"),
        ({"display_name": "Ada\nLovelace"}, "user.display_name"),
        ({"display_name": "Ada\x00"}, "user.display_name"),
        (
            {"preferences": {"quiet_hours_start": "25:00", "quiet_hours_end": "08:00"}},
            "user.preferences.quiet_hours_start",
        ),
        ({"preferences": {"quiet_hours_start": "22:00"}}, "user.preferences.quiet_hours_end"),
        (
            {"preferences": {"quiet_hours_start": "22:00", "quiet_hours_end": "22:00"}},
            "user.preferences.quiet_hours_end",
        ),
    ],
)
async def test_create_rejects_bad_fields_naming_them(clarion: RunningClarion, user: dict[str, Any], field: str) -> None:
    code, status = await rpc_error(clarion.users.CreateUser(users_pb2.CreateUserRequest(user=user), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)
    assert field in status.message


async def test_create_reports_every_bad_field_at_once(clarion: RunningClarion) -> None:
    request = users_pb2.CreateUserRequest(user_id="bad id!", user={"email_address": "x", "timezone": "Nowhere"})
    _, status = await rpc_error(clarion.users.CreateUser(request, timeout=10))
    assert set(violations(status)) == {"user_id", "user.email_address", "user.timezone"}


async def test_duplicate_email_and_duplicate_id_are_already_exists(clarion: RunningClarion) -> None:
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u1", user=SEED_USER), timeout=10)
    other = users_pb2.User(email_address="USER@example.com")
    code, status = await rpc_error(clarion.users.CreateUser(users_pb2.CreateUserRequest(user=other), timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "EMAIL_ALREADY_EXISTS"
    code, status = await rpc_error(
        clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u1", user=users_pb2.User()), timeout=10)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "USER_ALREADY_EXISTS"


async def test_users_without_email_do_not_collide(clarion: RunningClarion) -> None:
    await create(clarion, phone_number="+14155550123")
    await create(clarion, phone_number="+14155550124")


async def test_unknown_user_is_not_found_everywhere(clarion: RunningClarion) -> None:
    calls = [
        clarion.users.GetUser(users_pb2.GetUserRequest(user_id="ghost"), timeout=10),
        clarion.users.UpdateUser(
            users_pb2.UpdateUserRequest(user={"user_id": "ghost", "display_name": "x"}), timeout=10
        ),
        clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id="ghost"), timeout=10),
        clarion.users.AddDevice(
            users_pb2.AddDeviceRequest(user_id="ghost", device={"token": "t", "platform": "DEVICE_PLATFORM_IOS"}),
            timeout=10,
        ),
    ]
    for call in calls:
        code, status = await rpc_error(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert status_detail(status, error_details_pb2.ErrorInfo).reason == "USER_NOT_FOUND"


async def test_malformed_id_is_invalid_argument(clarion: RunningClarion) -> None:
    code, status = await rpc_error(clarion.users.GetUser(users_pb2.GetUserRequest(user_id="a/b"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in violations(status)
    code, _ = await rpc_error(clarion.users.GetUser(users_pb2.GetUserRequest(), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_update_honours_the_field_mask(clarion: RunningClarion) -> None:
    created = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u2", user=SEED_USER), timeout=10)
    change = users_pb2.User(
        user_id="u2", display_name="Ada", timezone="Asia/Tokyo", preferences=users_pb2.Preferences(push_enabled=False)
    )
    updated = await clarion.users.UpdateUser(
        users_pb2.UpdateUserRequest(
            user=change, update_mask=field_mask_pb2.FieldMask(paths=["display_name", "preferences.push_enabled"])
        ),
        timeout=10,
    )
    assert updated.display_name == "Ada"
    assert updated.preferences.push_enabled is False
    assert updated.timezone == "UTC", "a field outside the mask is left alone"
    assert updated.preferences.quiet_hours_start == "22:00"
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()
    assert await clarion.users.GetUser(users_pb2.GetUserRequest(user_id="u2"), timeout=10) == updated


async def test_update_without_mask_changes_the_fields_that_are_set(clarion: RunningClarion) -> None:
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u3", user=SEED_USER), timeout=10)
    updated = await clarion.users.UpdateUser(
        users_pb2.UpdateUserRequest(user={"user_id": "u3", "preferences": {"email_enabled": False}}), timeout=10
    )
    assert updated.preferences.email_enabled is False
    assert updated.preferences.push_enabled is True
    assert updated.email_address == "user@example.com"


async def test_update_mask_can_clear_a_field(clarion: RunningClarion) -> None:
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u4", user=SEED_USER), timeout=10)
    updated = await clarion.users.UpdateUser(
        users_pb2.UpdateUserRequest(user={"user_id": "u4"}, update_mask={"paths": ["phone_number", "preferences"]}),
        timeout=10,
    )
    assert updated.phone_number == ""
    assert updated.preferences.quiet_hours_start == ""
    assert updated.preferences.email_enabled is True


async def test_update_rejects_unknown_paths_bad_values_and_half_windows(clarion: RunningClarion) -> None:
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user_id="u5", user=SEED_USER), timeout=10)
    for paths, user, field in [
        (["nickname"], {"user_id": "u5"}, "update_mask"),
        (["create_time"], {"user_id": "u5"}, "update_mask"),
        (["email_address"], {"user_id": "u5", "email_address": "nope"}, "user.email_address"),
        (["preferences.quiet_hours_end"], {"user_id": "u5"}, "user.preferences.quiet_hours_end"),
    ]:
        request = users_pb2.UpdateUserRequest(user=user, update_mask={"paths": paths})
        code, status = await rpc_error(clarion.users.UpdateUser(request, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(status)


async def test_update_to_a_taken_email_is_already_exists(clarion: RunningClarion) -> None:
    await create(clarion, email_address="one@example.com")
    second = await create(clarion, email_address="two@example.com")
    request = users_pb2.UpdateUserRequest(user={"user_id": second.user_id, "email_address": "one@example.com"})
    code, _ = await rpc_error(clarion.users.UpdateUser(request, timeout=10))
    assert code == grpc.StatusCode.ALREADY_EXISTS


async def test_delete_removes_the_user_and_frees_the_email(clarion: RunningClarion) -> None:
    created = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    await clarion.users.DeleteUser(users_pb2.DeleteUserRequest(user_id=created.user_id), timeout=10)
    code, _ = await rpc_error(clarion.users.GetUser(users_pb2.GetUserRequest(user_id=created.user_id), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND
    await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)


async def test_devices_are_added_once_and_removed(clarion: RunningClarion) -> None:
    user = await create(clarion, email_address="dev@example.com")
    add = users_pb2.AddDeviceRequest(
        user_id=user.user_id, device={"token": "fcm:abc", "platform": "DEVICE_PLATFORM_ANDROID"}
    )
    first = await clarion.users.AddDevice(add, timeout=10)
    again = await clarion.users.AddDevice(add, timeout=10)
    assert first.device_id == again.device_id
    assert first.platform == users_pb2.DEVICE_PLATFORM_ANDROID
    fetched = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=user.user_id), timeout=10)
    assert [d.token for d in fetched.devices] == ["fcm:abc"]

    await clarion.users.RemoveDevice(
        users_pb2.RemoveDeviceRequest(user_id=user.user_id, device_id=first.device_id), timeout=10
    )
    fetched = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=user.user_id), timeout=10)
    assert list(fetched.devices) == []
    code, status = await rpc_error(
        clarion.users.RemoveDevice(
            users_pb2.RemoveDeviceRequest(user_id=user.user_id, device_id=first.device_id), timeout=10
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert status_detail(status, error_details_pb2.ErrorInfo).reason == "DEVICE_NOT_FOUND"


async def test_a_token_moves_to_its_new_user_and_is_never_stored_twice(clarion: RunningClarion) -> None:
    alice = await create(clarion, email_address="alice@example.com")
    bob = await create(clarion, email_address="bob@example.com")
    device = {"token": "shared-install", "platform": "DEVICE_PLATFORM_IOS"}
    await clarion.users.AddDevice(users_pb2.AddDeviceRequest(user_id=alice.user_id, device=device), timeout=10)
    alice_before = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=alice.user_id), timeout=10)
    assert len(alice_before.devices) == 1
    await clarion.users.AddDevice(users_pb2.AddDeviceRequest(user_id=bob.user_id, device=device), timeout=10)
    alice_after = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=alice.user_id), timeout=10)
    bob_after = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=bob.user_id), timeout=10)
    assert list(alice_after.devices) == []
    assert [d.token for d in bob_after.devices] == ["shared-install"]


@pytest.mark.parametrize(
    ("device", "field"),
    [
        ({"token": "", "platform": "DEVICE_PLATFORM_IOS"}, "device.token"),
        ({"token": "has space", "platform": "DEVICE_PLATFORM_IOS"}, "device.token"),
        ({"token": "x" * 5000, "platform": "DEVICE_PLATFORM_IOS"}, "device.token"),
        ({"token": "ok"}, "device.platform"),
    ],
)
async def test_add_device_validates(clarion: RunningClarion, device: dict[str, Any], field: str) -> None:
    user = await create(clarion)
    request = users_pb2.AddDeviceRequest(user_id=user.user_id, device=device)
    code, status = await rpc_error(clarion.users.AddDevice(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(status)


async def test_remove_device_with_a_malformed_id_is_invalid_argument(clarion: RunningClarion) -> None:
    user = await create(clarion)
    request = users_pb2.RemoveDeviceRequest(user_id=user.user_id, device_id="not-a-uuid")
    code, status = await rpc_error(clarion.users.RemoveDevice(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "device_id" in violations(status)


async def test_list_pages_through_every_user_in_a_stable_order(clarion: RunningClarion) -> None:
    created = [(await create(clarion, email_address=f"p{i}@example.com")).user_id for i in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await clarion.users.ListUsers(users_pb2.ListUsersRequest(page_size=3, page_token=token), timeout=10)
        seen += [u.user_id for u in page.users]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    assert pages == 3


async def test_list_filters_by_email_and_refuses_a_token_from_other_filters(clarion: RunningClarion) -> None:
    for i in range(3):
        await create(clarion, email_address=f"f{i}@example.com")
    only = await clarion.users.ListUsers(users_pb2.ListUsersRequest(email_address="F1@example.com"), timeout=10)
    assert [u.email_address for u in only.users] == ["f1@example.com"]

    first = await clarion.users.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=10)
    assert first.next_page_token
    request = users_pb2.ListUsersRequest(page_size=1, page_token=first.next_page_token, email_address="f0@example.com")
    code, status = await rpc_error(clarion.users.ListUsers(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in violations(status)
    code, _ = await rpc_error(clarion.users.ListUsers(users_pb2.ListUsersRequest(page_token="garbage"), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await rpc_error(clarion.users.ListUsers(users_pb2.ListUsersRequest(page_size=-1), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_string_that_is_not_utf8_is_invalid_argument_not_unknown(clarion: RunningClarion) -> None:
    # GetUserRequest with user_id (field 1) holding bytes that are not UTF-8: as a client in another language
    # could send it, which Python's stubs never would.
    call: Any = clarion.channel.unary_unary("/clarion.v1.UserService/GetUser")  # bytes in, bytes out
    code, status = await rpc_error(call(b"\x0a\x02\xff\xfe", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in status.message
