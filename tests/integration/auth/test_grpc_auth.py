"""API keys on the real services, as a direct gRPC client sees them: the scope matrix, every reason a key is refused,
what stays open, revocation within the cache bound, last-used times, the per-key quota, and the services'
own credential."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from clarion import app
from clarion.keys.manage import list_keys, revoke_key
from clarion.keys.scopes import Scope
from clarion.v1 import (
    access_pb2,
    access_pb2_grpc,
    notifications_pb2,
    notifications_pb2_grpc,
    templates_pb2,
    templates_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from tests.helpers import health_status, status_detail
from tests.integration.auth.conftest import SERVICES, channel_with, one_rpc
from tests.integration.conftest import RunningClarion
from tests.integration.notifications.test_send_notification import send_request
from tests.integration.templates.test_template_service import SEED_TEMPLATE
from tests.integration.users.test_user_service import SEED_USER, rpc_error

pytestmark = pytest.mark.integration

GRPCURL = str(Path(sys.executable).parent / "grpcurl")

# Which services each set of scopes may call.
MATRIX: list[tuple[tuple[str, ...], set[str]]] = [
    ((Scope.SEND,), {"notifications"}),
    ((Scope.MANAGE,), {"users", "templates"}),
    ((Scope.SEND, Scope.MANAGE), {"users", "templates", "notifications"}),
    ((Scope.ADMIN,), {"users", "templates", "notifications"}),
]


def reason(status: Any) -> str:
    return str(status_detail(status, error_details_pb2.ErrorInfo).reason)


@pytest.mark.parametrize(("scopes", "allowed"), MATRIX, ids=["send", "manage", "send+manage", "admin"])
async def test_each_scope_against_one_rpc_of_each_service(
    clarion: RunningClarion, scopes: tuple[str, ...], allowed: set[str]
) -> None:
    key = await clarion.make_key(*scopes)
    async with channel_with(clarion.address, key) as channel:
        for service in SERVICES:
            if service in allowed:
                await one_rpc(channel, service)
                continue
            code, status = await rpc_error(one_rpc(channel, service))
            assert code == grpc.StatusCode.PERMISSION_DENIED, service
            assert reason(status) == "SCOPE_MISSING"
            info = status_detail(status, error_details_pb2.ErrorInfo)
            needed = {"notifications": "notifications:send", "users": "manage", "templates": "manage"}[service]
            assert info.metadata["scope"] == needed
            if service == "users":
                assert "(or 'admin', which includes it)" in status.message
            assert status_detail(status, error_details_pb2.RequestInfo).request_id


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (None, "API_KEY_MISSING"),
        ("clr_nosuchkey0_" + "x" * 43, "API_KEY_INVALID"),
        ("not-a-clarion-key", "API_KEY_INVALID"),
    ],
)
async def test_a_missing_or_bad_key_is_unauthenticated_on_every_service(
    clarion: RunningClarion, key: str | None, expected: str
) -> None:
    async with channel_with(clarion.address, key) as channel:
        for service in SERVICES:
            code, status = await rpc_error(one_rpc(channel, service))
            assert code == grpc.StatusCode.UNAUTHENTICATED, service
            assert reason(status) == expected
            assert "x" * 43 not in status.message, "the key is never repeated back"


async def test_the_key_is_checked_before_the_request_is_parsed(clarion: RunningClarion) -> None:
    # Bytes that are no GetUserRequest (a string that is not UTF-8): without a key, the answer is about the key.
    async with channel_with(clarion.address, None) as channel:
        call: Any = channel.unary_unary("/clarion.v1.UserService/GetUser")  # bytes in, bytes out
        code, status = await rpc_error(call(b"\x0a\x02\xff\xfe", timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert reason(status) == "API_KEY_MISSING"
    # With the key, the same bytes are the client's malformed request.
    call = clarion.channel.unary_unary("/clarion.v1.UserService/GetUser")
    code, status = await rpc_error(call(b"\x0a\x02\xff\xfe", timeout=10))
    assert (code, reason(status)) == (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")


async def test_a_wrong_secret_for_a_real_key_is_invalid(clarion: RunningClarion) -> None:
    key = await clarion.make_key(Scope.ADMIN)
    async with channel_with(clarion.address, key[:-6] + "AAAAAA") as channel:
        code, status = await rpc_error(one_rpc(channel, "users"))
    assert (code, reason(status)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")


async def test_a_revoked_key_is_refused_within_the_cache_bound(start_clarion: Callable[..., Any]) -> None:
    clarion: RunningClarion = await start_clarion(api_key_cache_ttl_s=0.5)
    key = await clarion.make_key(Scope.ADMIN)
    async with channel_with(clarion.address, key) as channel:
        await one_rpc(channel, "users")  # cached now
        await revoke_key(clarion.resources.sessions, key.split("_")[1])
        await asyncio.sleep(0.6)
        code, status = await rpc_error(one_rpc(channel, "users"))
    assert (code, reason(status)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_REVOKED")
    assert status_detail(status, error_details_pb2.ErrorInfo).metadata["key_id"] == key.split("_")[1]


async def test_health_and_reflection_need_no_key(clarion: RunningClarion) -> None:
    async with channel_with(clarion.address, None) as channel:
        assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await health_status(channel, "clarion.v1.UserService") == health_pb2.HealthCheckResponse.SERVING
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", clarion.address, "describe", "clarion.v1.UserService", stdout=subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0
    assert "rpc CreateUser" in out.decode()


async def test_a_send_only_key_sends_because_the_services_call_each_other_with_their_own_credential(
    clarion: RunningClarion,
) -> None:
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    await clarion.templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=SEED_TEMPLATE), timeout=10)
    sender = await clarion.make_key(Scope.SEND, name="billing")
    async with channel_with(clarion.address, sender) as channel:
        notifications = notifications_pb2_grpc.NotificationServiceStub(channel)
        response = await notifications.SendNotification(send_request(user.user_id), timeout=10)
        assert response.notification.notification_id
        # ... while the key itself still may not read the user NotificationService just looked up.
        users = users_pb2_grpc.UserServiceStub(channel)
        code, _ = await rpc_error(users.GetUser(users_pb2.GetUserRequest(user_id=user.user_id), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_last_used_is_recorded(clarion: RunningClarion) -> None:
    key = await clarion.make_key(Scope.MANAGE, name="recorded")
    rows = {row.name: row for row in await list_keys(clarion.resources.sessions)}
    assert rows["recorded"].last_used_at is None
    async with channel_with(clarion.address, key) as channel:
        await one_rpc(channel, "templates")
    for _ in range(50):  # written off the request's path
        rows = {row.name: row for row in await list_keys(clarion.resources.sessions)}
        if rows["recorded"].last_used_at is not None:
            break
        await asyncio.sleep(0.05)
    assert rows["recorded"].last_used_at is not None
    assert rows["recorded"].last_used_at >= rows["recorded"].created_at


async def test_the_per_key_quota_is_resource_exhausted_with_retry_info_and_recovers(
    start_clarion: Callable[..., Any],
) -> None:
    clarion: RunningClarion = await start_clarion(api_key_rate_per_s=4, api_key_burst=3)
    key, other = await clarion.make_key(Scope.ADMIN), await clarion.make_key(Scope.ADMIN)
    async with channel_with(clarion.address, key) as channel:
        for _ in range(3):
            await one_rpc(channel, "users")
        code, status = await rpc_error(one_rpc(channel, "users"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(status) == "API_KEY_RATE_LIMITED"
        delay_s = status_detail(status, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() / 1e9
        assert 0 < delay_s <= 0.25
        async with channel_with(clarion.address, other) as other_channel:
            await one_rpc(other_channel, "users")  # each key has its own bucket
        await asyncio.sleep(delay_s + 0.05)
        await one_rpc(channel, "users")


async def test_with_auth_off_no_key_is_needed(start_clarion: Callable[..., Any]) -> None:
    clarion: RunningClarion = await start_clarion(auth_required=False)
    async with channel_with(clarion.address, None) as channel:
        for service in SERVICES:
            await one_rpc(channel, service)
        templates = templates_pb2_grpc.TemplateServiceStub(channel)
        await templates.CreateTemplate(templates_pb2.CreateTemplateRequest(template=SEED_TEMPLATE), timeout=10)


async def _user_with_devices(clarion: RunningClarion, count: int) -> tuple[str, list[str]]:
    user = await clarion.users.CreateUser(users_pb2.CreateUserRequest(user=SEED_USER), timeout=10)
    devices = []
    for n in range(count):
        device = {"token": f"fcm:device-{n}", "platform": "DEVICE_PLATFORM_ANDROID"}
        request = users_pb2.AddDeviceRequest(user_id=user.user_id, device=device)
        added = await clarion.users.AddDevice(request, timeout=10)
        devices.append(added.device_id)
    return user.user_id, devices


async def _devices_of(clarion: RunningClarion, user_id: str) -> list[str]:
    user = await clarion.users.GetUser(users_pb2.GetUserRequest(user_id=user_id), timeout=10)
    return [device.device_id for device in user.devices]


async def test_the_push_workers_service_key_removes_a_dead_device(clarion: RunningClarion) -> None:
    # As the push worker does when FCM says a token is unregistered, with its own key, over gRPC.
    user_id, (dead, alive) = await _user_with_devices(clarion, 2)
    settings = clarion.resources.settings.model_copy(
        update={"service_key": SecretStr(await clarion.make_service_key("push"))}
    )
    clients = app.service_clients(settings, own_address=clarion.address)
    try:
        await clients.remove_device(user_id, dead)
        await clients.remove_device(user_id, dead)  # gone already: fine
    finally:
        await clients.close()
    assert await _devices_of(clarion, user_id) == [alive]


async def test_in_process_a_dead_device_is_removed_without_any_service_key(start_clarion: Callable[..., Any]) -> None:
    # `clarion up`: one process, keys on, no service key; the push worker's call stays in the process.
    clarion: RunningClarion = await start_clarion(in_process=True)
    assert clarion.resources.settings.service_key is None
    user_id, (dead, alive) = await _user_with_devices(clarion, 2)
    await clarion.resources.clients.remove_device(user_id, dead)
    assert await _devices_of(clarion, user_id) == [alive]


async def test_a_read_key_reads_every_service_and_changes_nothing(clarion: RunningClarion) -> None:
    key = await clarion.make_key(Scope.READ)
    async with channel_with(clarion.address, key) as channel:
        for service in SERVICES:
            await one_rpc(channel, service)
        replay = notifications_pb2_grpc.NotificationServiceStub(channel).ReplayDeadLetters(
            notifications_pb2.ReplayDeadLettersRequest(all=True), timeout=10
        )
        code, status = await rpc_error(replay)
        assert (code, reason(status)) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
        create = users_pb2_grpc.UserServiceStub(channel).CreateUser(
            users_pb2.CreateUserRequest(user=SEED_USER), timeout=10
        )
        code, status = await rpc_error(create)
        assert (code, reason(status)) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_MISSING")
    # Where `read` would do, the refusal says so.
    async with channel_with(clarion.address, await clarion.make_key(Scope.DEVICES_REMOVE)) as channel:
        code, status = await rpc_error(one_rpc(channel, "users"))
    assert "'read' is enough to read" in status.message


@pytest.mark.parametrize(
    ("scopes", "can", "cannot"),
    [
        ((Scope.READ,), "NotificationService/ListDeadLetters", "NotificationService/ReplayDeadLetters"),
        ((Scope.SEND,), "NotificationService/ReplayDeadLetters", "TemplateService/UpdateTemplate"),
        ((Scope.MANAGE,), "TemplateService/UpdateTemplate", "NotificationService/ListNotifications"),
    ],
)
async def test_get_caller_says_who_the_key_is_and_what_it_may_call(
    clarion: RunningClarion, scopes: tuple[Scope, ...], can: str, cannot: str
) -> None:
    key = await clarion.make_key(*scopes)
    async with channel_with(clarion.address, key) as channel:
        caller = await access_pb2_grpc.AccessServiceStub(channel).GetCaller(access_pb2.GetCallerRequest(), timeout=10)
    assert caller.key_id == key.split("_")[1]
    assert list(caller.scopes) == sorted(s.value for s in scopes)
    assert caller.project_id == "default"
    allowed = list(caller.allowed_methods)
    assert allowed == sorted(allowed)
    assert f"clarion.v1.{can}" in allowed
    assert f"clarion.v1.{cannot}" not in allowed
    assert "clarion.v1.AccessService/GetCaller" in allowed


async def test_get_caller_needs_a_key(clarion: RunningClarion) -> None:
    async with channel_with(clarion.address, None) as channel:
        code, status = await rpc_error(
            access_pb2_grpc.AccessServiceStub(channel).GetCaller(access_pb2.GetCallerRequest(), timeout=10)
        )
    assert (code, reason(status)) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
