"""The gRPC plumbing end to end: a real grpc.aio server with our interceptor, and a real client."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from clarion.core.config import load_settings
from clarion.core.errors import InvalidArgument, NotFound
from clarion.core.logging import configure_logging
from clarion.core.server import GrpcServer, PortInUseError, service_registration
from clarion.v1 import users_pb2, users_pb2_grpc
from tests.helpers import health_status, status_detail

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


class ScriptedUsers(users_pb2_grpc.UserServiceServicer):
    """A servicer whose handlers fail the ways real ones can, to exercise the interceptor."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def GetUser(self, request: users_pb2.GetUserRequest, context: Any) -> users_pb2.User:
        if request.user_id == "slow":
            self.entered.set()
            await self.release.wait()
            return users_pb2.User(user_id="slow")
        raise NotFound(f"user {request.user_id} not found", reason="USER_NOT_FOUND", metadata={"user_id": "u1"})

    async def CreateUser(self, request: users_pb2.CreateUserRequest, context: Any) -> users_pb2.User:
        raise RuntimeError("connection to db-primary.internal:5432 failed for password hunter2")

    async def DeleteUser(self, request: users_pb2.DeleteUserRequest, context: Any) -> Any:
        raise InvalidArgument.for_field("user_id", "must not be empty")


@pytest.fixture
async def server() -> AsyncIterator[tuple[GrpcServer, ScriptedUsers, str]]:
    servicer = ScriptedUsers()  # type: ignore[abstract]  # the RPCs it leaves out answer UNIMPLEMENTED
    registration = service_registration(
        servicer,
        users_pb2_grpc.add_UserServiceServicer_to_server,
        users_pb2.DESCRIPTOR.services_by_name["UserService"],
    )
    # The plumbing on its own: API keys are tested with the real services in tests/integration/auth/.
    grpc_server = GrpcServer(load_settings(grpc_port=0, shutdown_grace_s=5), [registration], auth=None)
    port = await grpc_server.start()
    yield grpc_server, servicer, f"127.0.0.1:{port}"
    servicer.release.set()
    await grpc_server.server.stop(0)


@pytest.fixture
async def channel(server: tuple[GrpcServer, ScriptedUsers, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server[2]) as chan:
        yield chan


async def test_domain_not_found_reaches_the_client_as_not_found_with_error_info(channel: grpc.aio.Channel) -> None:
    stub = users_pb2_grpc.UserServiceStub(channel)
    call = stub.GetUser(users_pb2.GetUserRequest(user_id="u1"), timeout=5, metadata=[("x-request-id", "req-42")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "user u1 not found"
    status = await rpc_status.aio.from_call(call)
    info = status_detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["user_id"]) == ("USER_NOT_FOUND", "clarion.dev", "u1")
    assert status_detail(status, error_details_pb2.RequestInfo).request_id == "req-42"


async def test_invalid_argument_carries_the_field_violation(channel: grpc.aio.Channel) -> None:
    call = users_pb2_grpc.UserServiceStub(channel).DeleteUser(users_pb2.DeleteUserRequest(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = status_detail(await rpc_status.aio.from_call(call), error_details_pb2.BadRequest).field_violations[0]
    assert violation.field == "user_id"


async def test_unexpected_exception_is_internal_without_its_text(channel: grpc.aio.Channel) -> None:
    call = users_pb2_grpc.UserServiceStub(channel).CreateUser(users_pb2.CreateUserRequest(), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    for leaked in ("hunter2", "db-primary", "RuntimeError", "Traceback"):
        assert leaked not in (error.details() or "")
        assert leaked not in str(error.trailing_metadata())
    request_id = status_detail(await rpc_status.aio.from_call(call), error_details_pb2.RequestInfo).request_id
    assert request_id
    assert request_id in (error.details() or "")


async def test_unwritten_rpc_is_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users_pb2_grpc.UserServiceStub(channel).ListUsers(users_pb2.ListUsersRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_request_id_is_returned_in_trailing_metadata(channel: grpc.aio.Channel) -> None:
    call = users_pb2_grpc.UserServiceStub(channel).GetUser(
        users_pb2.GetUserRequest(user_id="u1"), timeout=5, metadata=[("x-request-id", "trace-me")]
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    assert ("x-request-id", "trace-me") in tuple(await call.trailing_metadata() or ())


@pytest.mark.parametrize("service", ["", "clarion.v1.UserService"])
async def test_health_serving_for_server_and_each_service(channel: grpc.aio.Channel, service: str) -> None:
    assert await health_status(channel, service) == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services_to_grpcurl(server: tuple[GrpcServer, ScriptedUsers, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", server[2], "list", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, err.decode()
    assert set(out.decode().split()) == {
        "clarion.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_second_server_on_the_same_port_fails_loudly(server: tuple[GrpcServer, ScriptedUsers, str]) -> None:
    port = int(server[2].rsplit(":", 1)[1])
    second = GrpcServer(load_settings(grpc_port=port), [], auth=None)
    with pytest.raises(PortInUseError, match=str(port)):
        await second.start()


async def test_graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones(
    server: tuple[GrpcServer, ScriptedUsers, str], channel: grpc.aio.Channel
) -> None:
    grpc_server, servicer, _ = server
    stub = users_pb2_grpc.UserServiceStub(channel)
    in_flight = asyncio.ensure_future(stub.GetUser(users_pb2.GetUserRequest(user_id="slow"), timeout=10))
    await asyncio.wait_for(servicer.entered.wait(), timeout=5)

    stopping = asyncio.ensure_future(grpc_server.stop())
    await asyncio.sleep(0.2)
    health = await grpc_server.health.Check(health_pb2.HealthCheckRequest(service=""), None)
    assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not stopping.done(), "stop() must wait for the in-flight call"

    servicer.release.set()
    assert (await in_flight).user_id == "slow"
    await asyncio.wait_for(stopping, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(users_pb2.GetUserRequest(user_id="u1"), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_checks_are_not_access_logged_at_info(channel: grpc.aio.Channel) -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    try:
        assert await health_status(channel, "") == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await users_pb2_grpc.UserServiceStub(channel).GetUser(users_pb2.GetUserRequest(user_id="u1"), timeout=5)
        # The server logs the call's end after the client has its answer: on a busy machine, a moment later.
        for _ in range(100):
            if '"rpc_finished"' in stream.getvalue():
                break
            await asyncio.sleep(0.05)
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    finished = [json.loads(line)["rpc"] for line in stream.getvalue().splitlines() if '"rpc_finished"' in line]
    assert finished == ["/clarion.v1.UserService/GetUser"]
