"""BatchGetUsers: the users found in the order asked, the missing ids listed, bad ids named."""

from __future__ import annotations

import grpc
import pytest

from clarion.v1 import users_pb2
from tests.integration.conftest import RunningClarion
from tests.integration.users.test_user_service import create, rpc_error, violations

pytestmark = pytest.mark.integration


async def test_found_users_in_order_with_devices_and_the_missing_listed(clarion: RunningClarion) -> None:
    ada = await create(clarion, user_id="ada", email_address="ada@example.com")
    bob = await create(clarion, user_id="bob")
    device = users_pb2.Device(token="tok-1", platform=users_pb2.DEVICE_PLATFORM_IOS)
    await clarion.users.AddDevice(users_pb2.AddDeviceRequest(user_id="bob", device=device), timeout=10)
    response = await clarion.users.BatchGetUsers(
        users_pb2.BatchGetUsersRequest(user_ids=["bob", "ghost", "ada", "bob"]), timeout=10
    )
    assert [u.user_id for u in response.users] == ["bob", "ada"], "each once, in the order asked"
    assert list(response.missing_user_ids) == ["ghost"]
    assert response.users[1] == ada
    got_bob = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=bob.user_id), timeout=10)
    assert response.users[0] == got_bob, "as GetUser shows it, devices included"
    assert [d.token for d in response.users[0].devices] == ["tok-1"]


async def test_bad_ids_and_sizes_are_invalid_argument_naming_the_field(clarion: RunningClarion) -> None:
    for ids, field in (([], "user_ids"), (["ok", "bad id!"], "user_ids[1]"), (["x"] * 1001, "user_ids")):
        code, status = await rpc_error(
            clarion.users.BatchGetUsers(users_pb2.BatchGetUsersRequest(user_ids=ids), timeout=10)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in violations(status)
