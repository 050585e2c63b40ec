"""Every error a REST client can get is a JSON google.rpc.Status with the right HTTP status: the services' errors
(converted by Envoy from gRPC) and Envoy's own replies alike. A REST client never has to parse text/plain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from tests.integration.gateway.conftest import Response, RestClient, RunningGateway

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def status_of(response: Response, http_status: int, grpc_code: int) -> dict[str, Any]:
    """The google.rpc.Status in `response`, after checking its HTTP status, JSON content type and code."""
    assert response.status == http_status, (response.status, response.body[:300])
    error: dict[str, Any] = response.json()
    assert error["code"] == grpc_code, error
    assert isinstance(error["message"], str)
    return error


def detail(error: dict[str, Any], type_name: str) -> dict[str, Any]:
    """The first detail of the given google.rpc type (e.g. "BadRequest")."""
    for item in error.get("details", []):
        if item["@type"] == f"type.googleapis.com/google.rpc.{type_name}":
            found: dict[str, Any] = item
            return found
    raise AssertionError(f"no {type_name} in {error}")


async def test_an_invalid_field_is_400_naming_the_field(rest: RestClient) -> None:
    response = await rest.post("/v1/users", {"email_address": "not-an-email", "phone_number": "12"})

    error = status_of(response, 400, 3)
    violations = {v["field"] for v in detail(error, "BadRequest")["field_violations"]}
    assert violations == {"user.email_address", "user.phone_number"}
    assert detail(error, "ErrorInfo")["domain"] == "clarion.dev"
    assert detail(error, "RequestInfo")["request_id"] == response.headers["x-request-id"]


async def test_a_missing_resource_is_404(rest: RestClient) -> None:
    error = status_of(await rest.get("/v1/users/nobody"), 404, 5)
    assert detail(error, "ErrorInfo")["reason"] == "USER_NOT_FOUND"
    error = status_of(await rest.get("/v1/templates/NOPE"), 404, 5)
    assert detail(error, "ErrorInfo")["reason"] == "TEMPLATE_NOT_FOUND"


async def test_a_duplicate_is_409(rest: RestClient) -> None:
    assert (await rest.post("/v1/users", {"email_address": "twice@example.com"})).status == 200

    error = status_of(await rest.post("/v1/users", {"email_address": "Twice@Example.com"}), 409, 6)
    assert detail(error, "ErrorInfo")["reason"] == "EMAIL_ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("GET", "/"),
        ("PUT", "/v1/users"),  # a known path, but no RPC takes PUT
        ("GET", "/v1/users/a/b/c"),
    ],
)
async def test_an_unknown_path_is_a_json_404(rest: RestClient, method: str, path: str) -> None:
    error = status_of(await rest.request(method, path), 404, 5)
    assert detail(error, "ErrorInfo")["reason"] == "UNKNOWN_PATH"
    assert path.split("?")[0] in error["message"]


async def test_an_unknown_query_parameter_is_a_json_400_naming_it(rest: RestClient) -> None:
    response = await rest.get("/v1/users?page_size=2&colour=blue")

    error = status_of(response, 400, 3)
    assert "colour" in error["message"]
    assert detail(error, "ErrorInfo")["reason"] == "BAD_REQUEST"
    assert detail(error, "RequestInfo")["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("body", [b'{"email_address": ', b"not json at all", b'{"preferences": "yes"}'])
async def test_a_body_that_is_not_the_message_in_json_is_a_json_400(rest: RestClient, body: bytes) -> None:
    response = await rest.request("POST", "/v1/users", body=body, headers={"content-type": "application/json"})

    error = status_of(response, 400, 3)
    assert detail(error, "ErrorInfo")["reason"] == "BAD_REQUEST"


async def test_a_body_over_one_mebibyte_is_a_json_413_before_reaching_a_service(rest: RestClient) -> None:
    too_large = {"email_address": "big@example.com", "display_name": "x" * MIB}
    error = status_of(await rest.post("/v1/users", too_large), 413, 8)
    assert detail(error, "ErrorInfo")["reason"] == "REQUEST_TOO_LARGE"

    # Just under the limit, the request goes through Envoy and the service judges it (a display name too long).
    under = {"email_address": "big@example.com", "display_name": "x" * (MIB - 200)}
    error = status_of(await rest.post("/v1/users", under), 400, 3)
    assert {v["field"] for v in detail(error, "BadRequest")["field_violations"]} == {"user.display_name"}


@pytest.fixture
async def services_missing(start_gateway: Callable[[int], Awaitable[RunningGateway]]) -> AsyncIterator[RestClient]:
    """A gateway in front of a gRPC server that has none of Clarion's services: every RPC is UNIMPLEMENTED there."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield (await start_gateway(port)).rest
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/users", {"email_address": "a@example.com"}),
        ("GET", "/v1/templates/T", None),
        ("POST", "/v1/notifications", {"user_id": "u", "template_key": "T"}),
        ("GET", "/v1/notifications/some-id", None),
        ("GET", "/v1/notifications?page_size=5", None),
        ("POST", "/v1/notifications/some-id:cancel", {}),
    ],
)
async def test_an_rpc_the_server_does_not_implement_is_a_json_501(
    services_missing: RestClient, method: str, path: str, body: Any
) -> None:
    # Also proves the route exists: without it, Envoy itself would answer 404 UNKNOWN_PATH.
    status_of(await services_missing.request(method, path, json_body=body), 501, 12)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/notifications/some-id"), ("POST", "/v1/notifications/some-id:cancel")]
)
async def test_notification_rpcs_reach_the_notification_service(rest: RestClient, method: str, path: str) -> None:
    error = status_of(await rest.request(method, path, json_body={} if method == "POST" else None), 404, 5)
    # The service's own NOT_FOUND, not Envoy's UNKNOWN_PATH.
    assert detail(error, "ErrorInfo")["reason"].endswith("NOT_FOUND")
    assert detail(error, "ErrorInfo")["reason"] != "UNKNOWN_PATH"
