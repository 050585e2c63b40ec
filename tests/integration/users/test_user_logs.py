"""Personal data never reaches the logs, whatever the RPC and whether it succeeds or fails."""

from __future__ import annotations

import io

import grpc
import pytest

from clarion.v1 import users_pb2
from tests.integration.conftest import RunningClarion

pytestmark = pytest.mark.integration

EMAIL = "secret.person@example.com"
PHONE = "+14155550199"
TOKEN = "fcm-token-that-must-stay-private"


async def test_emails_phones_and_tokens_never_appear_in_logs(clarion: RunningClarion, log_output: io.StringIO) -> None:
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": EMAIL, "phone_number": PHONE}), timeout=10
    )
    await clarion.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": TOKEN, "platform": "DEVICE_PLATFORM_IOS"}),
        timeout=10,
    )
    await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=user.user_id), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await clarion.users.CreateUser(users_pb2.CreateUserRequest(user={"email_address": EMAIL}), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await clarion.users.CreateUser(
            users_pb2.CreateUserRequest(user={"email_address": EMAIL + "\n", "phone_number": PHONE + "x"}), timeout=10
        )
    output = log_output.getvalue()
    assert "user_created" in output, "the test must actually capture the service's logs"
    assert "device_added" in output
    for secret in (EMAIL, PHONE, TOKEN, "secret.person"):
        assert secret not in output
