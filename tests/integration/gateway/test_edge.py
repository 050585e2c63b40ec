"""What the edge adds to every call: the request id, CORS for browsers, and the seed system's health path."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest

from tests.integration.gateway.conftest import RestClient

pytestmark = pytest.mark.integration

ORIGIN = "https://app.example.com"


def events(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines() if line.startswith("{")]


async def test_a_client_request_id_reaches_every_service_log_line_and_comes_back(
    rest: RestClient, log_output: io.StringIO
) -> None:
    response = await rest.post("/v1/users", {"email_address": "rid@example.com"}, headers={"x-request-id": "abc-123"})

    assert response.status == 200, response.body
    assert response.headers["x-request-id"] == "abc-123"
    logged = [event for event in events(log_output) if event.get("request_id") == "abc-123"]
    assert {event["event"] for event in logged} >= {"user_created", "rpc_finished"}
    assert {event["rpc"] for event in logged} == {"/clarion.v1.UserService/CreateUser"}


async def test_envoy_makes_a_request_id_when_the_client_sends_none(rest: RestClient, log_output: io.StringIO) -> None:
    response = await rest.get("/v1/users/nobody")

    request_id = response.headers["x-request-id"]
    assert uuid.UUID(request_id)
    # The service got the same id: it quotes it in the error and logs with it.
    quoted = [d for d in response.json()["details"] if d["@type"].endswith("RequestInfo")]
    assert quoted[0]["request_id"] == request_id
    assert any(event.get("request_id") == request_id for event in events(log_output))


async def test_envoys_own_replies_carry_the_request_id_too(rest: RestClient) -> None:
    response = await rest.get("/v1/unknown", headers={"x-request-id": "mine-1"})
    assert response.status == 404
    assert response.headers["x-request-id"] == "mine-1"


async def test_a_cors_preflight_is_answered_by_envoy(rest: RestClient) -> None:
    response = await rest.request(
        "OPTIONS",
        "/v1/users/ada",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "PATCH",
            "access-control-request-headers": "content-type, x-request-id",
        },
    )

    assert response.status == 200, response.body
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "PATCH" in response.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-request-id", "authorization", "x-idempotency-key"} <= allowed
    assert int(response.headers["access-control-max-age"]) > 0


async def test_a_cross_origin_call_may_read_the_response_and_its_request_id(rest: RestClient) -> None:
    response = await rest.get("/v1/users?page_size=1", headers={"origin": ORIGIN})

    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"]


async def test_v1_health_answers_from_the_services_grpc_health(rest: RestClient) -> None:
    response = await rest.get("/v1/health")
    assert (response.status, response.json()) == (200, {"status": "SERVING"})

    one = await rest.get("/v1/health?service=clarion.v1.UserService")
    assert (one.status, one.json()) == (200, {"status": "SERVING"})

    # The health service's own answer for a name it does not know, as JSON.
    unknown = await rest.get("/v1/health?service=clarion.v1.NoSuchService")
    assert (unknown.status, unknown.json()["code"]) == (404, 5)
