"""Canary values pushed through the error paths of every service: none may appear in any log line.

Each canary is personal data or a secret a client sends (an address, a phone number, a push token, message data, an
API key). The calls fail in the ways a client's calls fail: validation, duplicates (whose database error quotes the
duplicate value), unknown references, a template that breaks while printing the data, a bad key.
"""

from __future__ import annotations

import io
from typing import Any

import grpc
import pytest

from clarion.keys.auth import BearerAuth
from clarion.v1 import notifications_pb2, templates_pb2, users_pb2, users_pb2_grpc
from tests.integration.conftest import RunningClarion
from tests.integration.templates.test_template_service import data

pytestmark = pytest.mark.integration

EMAIL = "canary.7f3e@example.com"
PHONE = "+14155550179"
TOKEN = "canary-device-token-9b1c"
SECRET = "canary-secret-Qm5hZ2llX2Nhbm"
KEY = "clr_canaryid01_" + SECRET + "x" * 20
DATA = "canary-data-5d21"


async def failing(call: Any) -> grpc.StatusCode:
    """Await a call that must fail; its code."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_no_canary_reaches_a_log_line(clarion: RunningClarion, log_output: io.StringIO) -> None:
    user = await clarion.users.CreateUser(
        users_pb2.CreateUserRequest(user={"email_address": EMAIL, "phone_number": PHONE}), timeout=10
    )
    await clarion.users.AddDevice(
        users_pb2.AddDeviceRequest(user_id=user.user_id, device={"token": TOKEN, "platform": "DEVICE_PLATFORM_WEB"}),
        timeout=10,
    )
    codes = [
        # A duplicate address: PostgreSQL's unique violation quotes it.
        await failing(clarion.users.CreateUser(users_pb2.CreateUserRequest(user={"email_address": EMAIL}), timeout=10)),
        await failing(
            clarion.users.CreateUser(
                users_pb2.CreateUserRequest(user={"email_address": EMAIL + "x", "phone_number": PHONE + "12345"}),
                timeout=10,
            )
        ),
        await failing(
            clarion.users.AddDevice(
                users_pb2.AddDeviceRequest(
                    user_id="nobody", device={"token": TOKEN, "platform": "DEVICE_PLATFORM_WEB"}
                ),
                timeout=10,
            )
        ),
    ]
    await clarion.templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(
            template={"template_key": "breaks", "subject": "s", "body": "{{ secret }} {{ secret.nope.deeper }}"}
        ),
        timeout=10,
    )
    render = templates_pb2.RenderTemplateRequest(template_key="breaks", data=data({"secret": DATA}))
    codes.append(await failing(clarion.templates.RenderTemplate(render, timeout=10)))
    send = notifications_pb2.SendNotificationRequest(user_id=user.user_id, template_key="breaks")
    send.message_data.update({"secret": DATA, "email": EMAIL})
    codes.append(await failing(clarion.notifications.SendNotification(send, timeout=10)))
    unknown = notifications_pb2.SendNotificationRequest(user_id="nobody", template_key="breaks")
    unknown.message_data.update({"secret": DATA})
    codes.append(await failing(clarion.notifications.SendNotification(unknown, timeout=10)))
    async with grpc.aio.insecure_channel(clarion.address, interceptors=[BearerAuth(KEY)]) as forged:
        stub: Any = users_pb2_grpc.UserServiceStub(forged)
        codes.append(await failing(stub.GetUser(users_pb2.GetUserRequest(user_id=user.user_id), timeout=10)))

    assert grpc.StatusCode.INTERNAL not in codes, codes
    logged = log_output.getvalue()
    assert "rpc_finished" in logged, "the calls were logged"
    for canary in (EMAIL, PHONE, TOKEN, SECRET, DATA):
        assert canary not in logged, canary
