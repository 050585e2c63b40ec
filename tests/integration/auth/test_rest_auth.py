"""API keys and rate limits as a REST client sees them through the real Envoy: 401, 403 and 429 as JSON
google.rpc.Status bodies with their reasons, health open to all, and Envoy's own flood guard hit and recovering."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from clarion.core.config import load_settings
from clarion.gateway.config import (
    ClientLimits,
    GatewayConfig,
    RateLimit,
    local_gateway_config,
    write_gateway_files,
)
from clarion.gateway.descriptors import default_descriptor_set_path, load_descriptor_set, service_names
from clarion.gateway.local import write_local_gateway
from clarion.gateway.process import run_envoy
from clarion.keys.manage import revoke_key
from clarion.keys.scopes import Scope
from clarion.v1 import users_pb2, users_pb2_grpc
from tests.conftest import free_port
from tests.helpers import health_status
from tests.integration.auth.conftest import channel_with, one_rpc
from tests.integration.conftest import RunningClarion
from tests.integration.gateway.conftest import Response, RestClient, RunningGateway
from tests.integration.gateway.test_rest_errors import detail, status_of

pytestmark = pytest.mark.integration

# One request per service, each of which the admin key may make.
REQUESTS = [
    ("POST", "/v1/users", {"email_address": "rest-auth@example.com"}),
    ("GET", "/v1/templates/NOPE", None),
    ("GET", "/v1/notifications?page_size=1", None),
    ("GET", "/v1/caller", None),
]


def reason(error: dict[str, Any]) -> str:
    return str(detail(error, "ErrorInfo")["reason"])


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
async def test_no_key_is_a_json_401(rest: RestClient, method: str, path: str, body: Any) -> None:
    response = await rest.with_key(None).request(method, path, json_body=body)
    error = status_of(response, 401, 16)
    assert reason(error) == "API_KEY_MISSING"
    assert detail(error, "RequestInfo")["request_id"] == response.headers["x-request-id"]


async def test_a_bad_key_is_a_json_401(rest: RestClient) -> None:
    for client in (rest.with_key("clr_nosuchkey0_" + "y" * 43), rest.with_key("letmein")):
        error = status_of(await client.get("/v1/users/ada"), 401, 16)
        assert reason(error) == "API_KEY_INVALID"
        assert "y" * 43 not in error["message"]
    basic = await rest.get("/v1/users/ada", headers={"authorization": "Basic YWRhOmxvdmVsYWNl"})
    assert reason(status_of(basic, 401, 16)) == "API_KEY_INVALID"


async def test_a_service_key_is_refused_at_the_edge_and_works_inside(
    clarion: RunningClarion, gateway: RunningGateway
) -> None:
    service = await clarion.make_service_key("dispatcher")
    for header in (f"Bearer {service}", f"bearer   {service}", f"  BEARER {service}", f"Bearer x {service}"):
        response = await gateway.rest.get("/v1/users?page_size=1", headers={"authorization": header})
        error = status_of(response, 403, 7)
        assert "service keys" in error["message"]
    async with channel_with(gateway.address, service) as through_edge:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await one_rpc(through_edge, "users")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Inside, where Clarion's workloads call each other, each key may make its workload's calls and nothing else.
    push = await clarion.make_service_key("push")
    expected = {
        (service, "GetUser"): grpc.StatusCode.NOT_FOUND,  # allowed: there is no such user
        (service, "ListUsers"): grpc.StatusCode.PERMISSION_DENIED,
        (service, "RemoveDevice"): grpc.StatusCode.PERMISSION_DENIED,
        (push, "RemoveDevice"): grpc.StatusCode.NOT_FOUND,
        (push, "AddDevice"): grpc.StatusCode.PERMISSION_DENIED,
        (push, "GetUser"): grpc.StatusCode.PERMISSION_DENIED,
    }
    for (key, method), code in expected.items():
        async with channel_with(clarion.address, key) as direct:
            with pytest.raises(grpc.aio.AioRpcError) as answered:
                await user_call(users_pb2_grpc.UserServiceStub(direct), method)
            assert answered.value.code() == code, (key[:20], method)
        async with channel_with(clarion.address, key) as direct:
            with pytest.raises(grpc.aio.AioRpcError) as beyond:
                await one_rpc(direct, "notifications")
            assert beyond.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def user_call(users: Any, method: str) -> Any:
    """`method` of UserService about a user that does not exist."""
    if method == "GetUser":
        return await users.GetUser(users_pb2.GetUserRequest(user_id="nobody"), timeout=10)
    if method == "ListUsers":
        return await users.ListUsers(users_pb2.ListUsersRequest(), timeout=10)
    if method == "RemoveDevice":
        return await users.RemoveDevice(
            users_pb2.RemoveDeviceRequest(user_id="nobody", device_id=str(uuid.uuid4())), timeout=10
        )
    device = {"token": "t" * 20, "platform": "DEVICE_PLATFORM_ANDROID"}
    return await users.AddDevice(users_pb2.AddDeviceRequest(user_id="nobody", device=device), timeout=10)


async def test_a_key_without_the_scope_is_a_json_403_naming_the_scope(
    clarion: RunningClarion, rest: RestClient
) -> None:
    sender = rest.with_key(await clarion.make_key(Scope.SEND))
    error = status_of(await sender.post("/v1/users", {"email_address": "no@example.com"}), 403, 7)
    assert reason(error) == "SCOPE_MISSING"
    assert detail(error, "ErrorInfo")["metadata"]["scope"] == "manage"
    assert (await sender.get("/v1/notifications?page_size=1")).status == 200


async def test_health_and_cors_preflights_need_no_key(rest: RestClient) -> None:
    anonymous = rest.with_key(None)
    response = await anonymous.get("/v1/health")
    assert (response.status, response.json()) == (200, {"status": "SERVING"})
    preflight = await anonymous.request(
        "OPTIONS",
        "/v1/users",
        headers={
            "origin": "https://app.example.com",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"]


async def test_a_revoked_key_is_a_json_401(
    start_clarion: Callable[..., Any], start_gateway: Callable[..., Awaitable[RunningGateway]]
) -> None:
    clarion: RunningClarion = await start_clarion(api_key_cache_ttl_s=0.3)
    key = await clarion.make_key(Scope.ADMIN)
    rest = (await start_gateway(int(clarion.address.rsplit(":", 1)[1]), api_key=key)).rest
    assert (await rest.get("/v1/users?page_size=1")).status == 200
    await revoke_key(clarion.resources.sessions, key.split("_")[1])
    await asyncio.sleep(0.4)
    error = status_of(await rest.get("/v1/users?page_size=1"), 401, 16)
    assert reason(error) == "API_KEY_REVOKED"


async def test_the_per_key_quota_is_a_json_429_with_retry_info_and_recovers(
    start_clarion: Callable[..., Any], start_gateway: Callable[..., Awaitable[RunningGateway]]
) -> None:
    clarion: RunningClarion = await start_clarion(api_key_rate_per_s=5, api_key_burst=2)
    rest = (await start_gateway(int(clarion.address.rsplit(":", 1)[1]), api_key=clarion.api_key)).rest
    for _ in range(2):
        assert (await rest.get("/v1/templates?page_size=1")).status == 200
    error = status_of(await rest.get("/v1/templates?page_size=1"), 429, 8)
    assert reason(error) == "API_KEY_RATE_LIMITED"
    assert detail(error, "ErrorInfo")["metadata"]["rate_per_s"] == "5"
    delay = detail(error, "RetryInfo")["retry_delay"]
    assert delay.endswith("s")
    assert 0 < float(delay[:-1]) <= 0.2
    await asyncio.sleep(float(delay[:-1]) + 0.05)
    assert (await rest.get("/v1/templates?page_size=1")).status == 200


def test_the_rendered_config_has_a_flood_guard_that_enforces(tmp_path: Path) -> None:
    config = local_config(tmp_path, grpc_port=50051)
    rendered = write_gateway_files(
        config, config_path=tmp_path / "envoy.yaml", source_descriptor_set=default_descriptor_set_path()
    ).read_text()
    guard = rendered.index("envoy.filters.http.local_ratelimit")
    assert (
        guard
        < rendered.index("envoy.filters.http.buffer\n")
        < rendered.index("envoy.filters.http.grpc_json_transcoder\n")
    )
    section = rendered[guard : rendered.index("envoy.filters.http.buffer\n")]
    # Without both at 100 % the filter only counts.
    assert section.count("default_value: {numerator: 100, denominator: HUNDRED}") == 2
    assert "max_tokens: 2000" in section
    assert "rate_limited_as_resource_exhausted: true" in section


def local_config(directory: Path, *, grpc_port: int, **changes: Any) -> GatewayConfig:
    source = default_descriptor_set_path()
    config = local_gateway_config(
        listen_host="127.0.0.1",
        listen_port=free_port(),
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        services=service_names(load_descriptor_set(source)),
        descriptor_path=directory / "gateway.binpb",
    )
    return dataclasses.replace(config, **changes)


async def until(attempt: Callable[[], Awaitable[bool]], tries: int = 30) -> int:
    """Call `attempt` until it returns True; how many calls that took (fails after `tries`)."""
    for count in range(1, tries + 1):
        if await attempt():
            return count
    raise AssertionError(f"not limited after {tries} requests")


async def test_envoys_flood_guard_is_a_json_429_for_rest_and_resource_exhausted_for_grpc_and_recovers(
    clarion: RunningClarion, tmp_path: Path
) -> None:
    guard = RateLimit(max_tokens=3, tokens_per_fill=3, fill_interval_s=1.0)
    config = local_config(tmp_path, grpc_port=int(clarion.address.rsplit(":", 1)[1]), rate_limit=guard)
    config_path = write_gateway_files(
        config, config_path=tmp_path / "envoy.yaml", source_descriptor_set=default_descriptor_set_path()
    )
    async with run_envoy(config_path, run_dir=tmp_path):
        rest = RestClient("127.0.0.1", config.listen_port)
        limited: list[Response] = []

        async def rest_limited() -> bool:
            response = await rest.get("/v1/health")
            if response.status == 429:
                limited.append(response)
            return bool(limited)

        # The bucket starts full (3); it may be refilled once while we drain it, never faster.
        assert 3 < await until(rest_limited) <= 7
        error = status_of(limited[0], 429, 8)
        assert reason(error) == "RATE_LIMITED"
        assert limited[0].headers["retry-after"] == "1"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{config.listen_port}") as channel:
            codes: list[grpc.StatusCode] = []

            async def grpc_limited() -> bool:
                try:
                    await health_status(channel)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    return True
                return False

            await until(grpc_limited)
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED]

        await asyncio.sleep(1.1)
        assert (await rest.get("/v1/health")).status == 200


async def test_each_address_key_and_anonymous_caller_has_a_bucket_of_its_own_at_the_edge(
    clarion: RunningClarion, tmp_path: Path
) -> None:
    # Small buckets that do not refill during the test (however slow the machine), under a roomy shared one. The
    # clients are told apart by X-Forwarded-For, which one trusted proxy hop makes Envoy believe.
    limits = ClientLimits(
        address_requests=10,
        address_per_fill=1,
        key_requests=3,
        key_per_fill=1,
        anonymous_requests=6,
        anonymous_per_fill=1,
        fill_interval_s=600,
    )
    config = local_config(
        tmp_path, grpc_port=int(clarion.address.rsplit(":", 1)[1]), client_limits=limits, trusted_proxy_hops=1
    )
    config_path = write_gateway_files(
        config, config_path=tmp_path / "envoy.yaml", source_descriptor_set=default_descriptor_set_path()
    )
    first, second = await clarion.make_key(Scope.MANAGE), await clarion.make_key(Scope.MANAGE)
    async with run_envoy(config_path, run_dir=tmp_path):
        rest = RestClient("127.0.0.1", config.listen_port)

        async def statuses(address: str, authorization: str | None, count: int, path: str = "/v1/users") -> list[int]:
            headers = {"x-forwarded-for": address} | ({"authorization": authorization} if authorization else {})
            return [(await rest.with_key(None).get(path, headers=headers)).status for _ in range(count)]

        # A key's bucket at an address: 3 calls, then 429 RATE_LIMITED; another key there has its own.
        assert await statuses("198.51.100.1", f"Bearer {first}", 4) == [200] * 3 + [429]
        limited = await rest.with_key(first).get("/v1/templates", headers={"x-forwarded-for": "198.51.100.1"})
        assert reason(status_of(limited, 429, 8)) == "RATE_LIMITED"
        assert await statuses("198.51.100.1", f"Bearer {second}", 3) == [200] * 3
        # Someone elsewhere presenting the first key's public id with a made-up secret spends a bucket of their
        # own: the key's holder, at its address, is untouched.
        victim_id = first.split("_")[1]
        assert await statuses("198.51.100.2", f"Bearer clr_{victim_id}_{'z' * 43}", 4) == [401] * 3 + [429]
        assert await statuses("198.51.100.3", f"Bearer {first}", 3) == [200] * 3
        # Made-up ids, a new one per call, get no further than their address's bucket (10).
        made_up = [(await statuses("198.51.100.4", f"Bearer clr_madeup{n:04d}_{'z' * 43}", 1))[0] for n in range(11)]
        assert made_up == [401] * 10 + [429]
        # Without a key (or with anything that is not one), a small bucket per address: 6, then 429.
        not_keys = [None, "letmein", "clr_", "Bearer clr_UPPER_" + "z" * 43, "Basic YWRhOmxvdmVsYWNl", "Bearer"]
        anonymous = [(await statuses("198.51.100.5", header, 1))[0] for header in not_keys]
        assert [*anonymous, *await statuses("198.51.100.5", None, 1)] == [401] * 6 + [429]
        # Health is in no bucket: probes answer through a flood from their own address.
        assert await statuses("198.51.100.5", None, 12, path="/v1/health") == [200] * 12
        async with grpc.aio.insecure_channel(f"127.0.0.1:{config.listen_port}") as channel:
            for _ in range(12):
                assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
        # Native gRPC callers are counted the same way, and get RESOURCE_EXHAUSTED.
        async with channel_with(f"127.0.0.1:{config.listen_port}", first) as channel:
            users = users_pb2_grpc.UserServiceStub(channel)
            request, forwarded = users_pb2.ListUsersRequest(), (("x-forwarded-for", "198.51.100.1"),)
            with pytest.raises(grpc.aio.AioRpcError) as exhausted:
                await users.ListUsers(request, timeout=10, metadata=forwarded)
            assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_with_keys_off_local_mode_has_the_flood_guard_only(tmp_path: Path) -> None:
    def rendered(**settings: Any) -> str:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        return write_local_gateway(load_settings(data_dir=folder, **settings), grpc_port=50051).read_text()

    on = rendered()
    assert "max_dynamic_descriptors: 10000" in on
    assert "envoy.filters.http.header_to_metadata" in on
    off = rendered(auth_required=False)
    assert "descriptors" not in off
    assert "header_to_metadata" not in off
    assert "max_tokens: 2000" in off, "the flood guard stays"


async def test_the_caller_over_rest_lists_what_a_read_key_may_call(clarion: RunningClarion, rest: RestClient) -> None:
    key = await clarion.make_key(Scope.READ)
    response = await rest.with_key(key).get("/v1/caller")
    assert response.status == 200, response.body
    caller = response.json()
    assert (caller["key_id"], caller["scopes"]) == (key.split("_")[1], ["read"])
    assert "clarion.v1.NotificationService/ListDeadLetters" in caller["allowed_methods"]
    assert "clarion.v1.NotificationService/ReplayDeadLetters" not in caller["allowed_methods"]
    refused = await rest.with_key(key).request("POST", "/v1/dead-letters:replay", json_body={"all": True})
    assert reason(status_of(refused, 403, 7)) == "SCOPE_MISSING"
