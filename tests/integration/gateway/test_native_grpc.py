"""Native gRPC on Envoy's port, next to REST: stubs, rich errors, health, reflection (grpcurl), unknown methods."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from clarion.keys.auth import BearerAuth
from clarion.v1 import templates_pb2, templates_pb2_grpc, users_pb2, users_pb2_grpc
from tests.helpers import health_status, status_detail
from tests.integration.gateway.conftest import RunningGateway

pytestmark = pytest.mark.integration

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture
async def channel(gateway: RunningGateway) -> AsyncIterator[grpc.aio.Channel]:
    """A gRPC channel to Envoy's port (not to the services' own port), sending the admin key."""
    assert gateway.api_key is not None
    async with grpc.aio.insecure_channel(gateway.address, interceptors=[BearerAuth(gateway.api_key)]) as channel:
        yield channel


async def grpcurl(*args: str) -> tuple[int, str, str]:
    """Run the real grpcurl without blocking the event loop the services run on."""
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_stubs_work_through_envoy(channel: grpc.aio.Channel) -> None:
    users = users_pb2_grpc.UserServiceStub(channel)
    templates = templates_pb2_grpc.TemplateServiceStub(channel)

    created = await users.CreateUser(
        users_pb2.CreateUserRequest(user=users_pb2.User(email_address="grpc@example.com")), timeout=10
    )
    fetched = await users.GetUser(users_pb2.GetUserRequest(user_id=created.user_id), timeout=10)
    assert fetched == created
    template = await templates.CreateTemplate(
        templates_pb2.CreateTemplateRequest(template=templates_pb2.Template(template_key="T", subject="s", body="b")),
        timeout=10,
    )
    assert template.version == 1


async def test_rich_errors_and_the_request_id_pass_through_envoy(channel: grpc.aio.Channel) -> None:
    users = users_pb2_grpc.UserServiceStub(channel)
    call = users.CreateUser(
        users_pb2.CreateUserRequest(user=users_pb2.User(email_address="nope")),
        timeout=10,
        metadata=(("x-request-id", "grpc-rid-7"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    violations = status_detail(status, error_details_pb2.BadRequest).field_violations
    assert [v.field for v in violations] == ["user.email_address"]
    assert status_detail(status, error_details_pb2.RequestInfo).request_id == "grpc-rid-7"


async def test_health_through_envoy(channel: grpc.aio.Channel) -> None:
    assert await health_status(channel) == health_pb2.HealthCheckResponse.SERVING
    assert await health_status(channel, "clarion.v1.TemplateService") == health_pb2.HealthCheckResponse.SERVING


async def test_an_unknown_grpc_method_is_unimplemented_not_json(channel: grpc.aio.Channel) -> None:
    method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/clarion.v1.NoSuchService/DoIt")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await method(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not (caught.value.details() or "").startswith("{"), "JSON bodies are for REST clients only"


async def test_a_grpc_request_over_one_mebibyte_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    users = users_pb2_grpc.UserServiceStub(channel)
    too_large = users_pb2.User(email_address="big@example.com", display_name="x" * (1024 * 1024))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await users.CreateUser(users_pb2.CreateUserRequest(user=too_large), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_grpcurl_lists_and_calls_by_reflection_through_envoy(gateway: RunningGateway) -> None:
    code, listed, errors = await grpcurl(gateway.address, "list")
    assert code == 0, errors
    assert set(listed.split()) >= {
        "clarion.v1.UserService",
        "clarion.v1.TemplateService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }

    code, described, errors = await grpcurl(gateway.address, "describe", "clarion.v1.UserService")
    assert code == 0, errors
    assert "rpc CreateUser" in described

    created = '{"user_id": "curl", "user": {"email_address": "curl@example.com"}}'
    key = f"authorization: Bearer {gateway.api_key}"
    code, output, errors = await grpcurl("-H", key, "-d", created, gateway.address, "clarion.v1.UserService/CreateUser")
    assert code == 0, errors
    assert json.loads(output)["userId"] == "curl"


async def test_a_reflection_stream_through_envoy_answers_each_request_while_it_stays_open(
    gateway: RunningGateway,
) -> None:
    # An interactive client asks, reads the answer, asks again: the edge must not hold the stream's messages
    # until the client closes its side (the request buffer is off on streaming routes).
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # its hints lack the streaming methods
        stream = stub.ServerReflectionInfo()
        for _ in range(2):
            await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            answer = await asyncio.wait_for(stream.read(), timeout=10)
            names = {service.name for service in answer.list_services_response.service}
            assert "clarion.v1.UserService" in names
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK


async def test_reflection_v1_answers_through_envoy_as_v1alpha_does(gateway: RunningGateway) -> None:
    # Current clients (grpcurl, Postman) ask grpc.reflection.v1 first; its messages are v1alpha's field for field.
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stream = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )()
        await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = cast(reflection_pb2.ServerReflectionResponse, await asyncio.wait_for(stream.read(), timeout=10))
        assert "clarion.v1.NotificationService" in {s.name for s in answer.list_services_response.service}
        await stream.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol="clarion.v1.UserService"))
        described = cast(reflection_pb2.ServerReflectionResponse, await asyncio.wait_for(stream.read(), timeout=10))
        assert described.file_descriptor_response.file_descriptor_proto
        await stream.done_writing()
        assert await stream.code() == grpc.StatusCode.OK
